package api

import (
	"net/http"
	"strings"
	"testing"
)

// TestOpenAPICatalogRoutes: the document describes every route of the
// catalog's table with the fields of its Go types; what it has beyond
// them are the daemon's routes (cmd/rewind's test checks the whole
// table).
func TestOpenAPICatalogRoutes(t *testing.T) {
	err := CheckOpenAPI(OpenAPI(), Routes(nil, ServerInfo{}))
	if err == nil {
		t.Fatal("the document describes no daemon route")
	}
	daemon := []string{"/v1/recoveries", "/v1/protections", "/v1/mounts", "/v1/verify/", "/v1/console"}
	for _, line := range strings.Split(err.Error(), "\n")[1:] {
		ok := strings.HasSuffix(line, "is in the document but no route serves it")
		if ok {
			ok = false
			for _, p := range daemon {
				ok = ok || strings.Contains(line, " "+p)
			}
		}
		if !ok {
			t.Errorf("%s", line)
		}
	}
}

// TestOpenAPICheckFindsDrift: a route the document lacks, a document
// path no route serves, and a field renamed on either side are all
// reported.
func TestOpenAPICheckFindsDrift(t *testing.T) {
	doc := []byte(`{"paths":{
		"/v1/things":{"get":{"responses":{"200":{"content":{"application/json":{"schema":{"type":"array","items":{"$ref":"#/components/schemas/Thing"}}}}}}}},
		"/v1/gone":{"delete":{"responses":{"204":{}}}}},
		"components":{"schemas":{"Thing":{"type":"object","properties":{"name":{"type":"string"},"size":{"type":"integer"},
			"inner":{"type":"object","properties":{"a":{"type":"string"}}}}}}}}`)
	type inner struct {
		A string `json:"a"`
	}
	type thing struct {
		Name  string `json:"name"`
		Size  int64  `json:"size,omitempty"`
		Inner inner  `json:"inner"`
	}
	h := http.NotFoundHandler()
	routes := []Route{{Method: "GET", Pattern: "/v1/things", Handler: h, Answer: []thing{}}, {Method: "DELETE", Pattern: "/v1/gone", Handler: h}}
	if err := CheckOpenAPI(doc, routes); err != nil {
		t.Fatalf("a document in step: %v", err)
	}
	type renamed struct {
		Name  string `json:"name"`
		Bytes int64  `json:"bytes"`
		Inner inner  `json:"inner"`
	}
	type deeper struct {
		Name  string `json:"name"`
		Size  int64  `json:"size"`
		Inner struct {
			B string `json:"b"`
		} `json:"inner"`
	}
	for what, c := range map[string]struct {
		routes []Route
		says   string
	}{
		"a route not in the document": {append(routes, Route{Method: "POST", Pattern: "/v1/things", Handler: h}), "POST /v1/things is a route the document does not describe"},
		"a path no route serves":      {routes[:1], "DELETE /v1/gone is in the document but no route serves it"},
		"a renamed field":             {[]Route{{Method: "GET", Pattern: "/v1/things", Handler: h, Answer: []renamed{}}, routes[1]}, "[bytes inner name], the schema [inner name size]"},
		"a renamed nested field":      {[]Route{{Method: "GET", Pattern: "/v1/things", Handler: h, Answer: []deeper{}}, routes[1]}, ".inner"},
		"an object for an array":      {[]Route{{Method: "GET", Pattern: "/v1/things", Handler: h, Answer: thing{}}, routes[1]}, "the schema"},
	} {
		err := CheckOpenAPI(doc, c.routes)
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v, want it to say %q", what, err, c.says)
		}
	}
}
