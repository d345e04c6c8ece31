package api

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
)

// CheckOpenAPI compares an OpenAPI document with a route table: the
// document must describe exactly the routes' (method, path) pairs, and
// each schema of a request body or a JSON answer must name exactly the
// JSON fields of the Go type the route takes or answers with (Route.Body,
// Route.Answer), nested structs included. It lists every difference.
func CheckOpenAPI(doc []byte, routes []Route) error {
	var d oaDoc
	if err := json.Unmarshal(doc, &d); err != nil {
		return fmt.Errorf("the OpenAPI document is not JSON: %w", err)
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	inDoc := map[string]oaOperation{}
	for path, ops := range d.Paths {
		for method, op := range ops {
			inDoc[strings.ToUpper(method)+" "+path] = op
		}
	}
	inTable := map[string]bool{}
	for _, r := range routes {
		key := r.Method + " " + r.Pattern
		inTable[key] = true
		op, ok := inDoc[key]
		if !ok {
			bad("%s is a route the document does not describe", key)
			continue
		}
		if r.Body != nil {
			mt, ok := op.RequestBody.Content["application/json"]
			if !ok {
				bad("%s: the document gives no application/json request body", key)
			} else {
				d.compare(key+" request", reflect.TypeOf(r.Body), mt.Schema, bad, map[reflect.Type]bool{})
			}
		}
		if r.Answer != nil {
			codes := make([]string, 0, len(op.Responses))
			for c := range op.Responses {
				if strings.HasPrefix(c, "2") {
					codes = append(codes, c)
				}
			}
			sort.Strings(codes)
			if len(codes) == 0 {
				bad("%s: the document gives no 2xx answer", key)
				continue
			}
			mt, ok := op.Responses[codes[0]].Content["application/json"]
			if !ok {
				bad("%s: the document's %s answer is not application/json", key, codes[0])
				continue
			}
			d.compare(key+" answer", reflect.TypeOf(r.Answer), mt.Schema, bad, map[reflect.Type]bool{})
		}
	}
	for key := range inDoc {
		if !inTable[key] {
			bad("%s is in the document but no route serves it", key)
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fmt.Errorf("the OpenAPI document and the routes differ:\n%s", strings.Join(problems, "\n"))
	}
	return nil
}

type (
	oaDoc struct {
		Paths      map[string]map[string]oaOperation `json:"paths"`
		Components struct {
			Schemas map[string]*oaSchema `json:"schemas"`
		} `json:"components"`
	}
	oaOperation struct {
		RequestBody struct {
			Content map[string]oaMedia `json:"content"`
		} `json:"requestBody"`
		Responses map[string]struct {
			Content map[string]oaMedia `json:"content"`
		} `json:"responses"`
	}
	oaMedia struct {
		Schema *oaSchema `json:"schema"`
	}
	oaSchema struct {
		Ref        string               `json:"$ref"`
		Type       string               `json:"type"`
		Items      *oaSchema            `json:"items"`
		Properties map[string]*oaSchema `json:"properties"`
	}
)

// resolve follows $ref to components.schemas.
func (d *oaDoc) resolve(s *oaSchema) *oaSchema {
	for i := 0; s != nil && s.Ref != "" && i < 10; i++ {
		s = d.Components.Schemas[strings.TrimPrefix(s.Ref, "#/components/schemas/")]
	}
	return s
}

var marshaler = reflect.TypeFor[json.Marshaler]()
var textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()

// compare checks that schema s describes Go type t.
func (d *oaDoc) compare(where string, t reflect.Type, s *oaSchema, bad func(string, ...any), seen map[reflect.Type]bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	s = d.resolve(s)
	if s == nil {
		bad("%s: no schema (or a $ref to none) for %s", where, t)
		return
	}
	if t.Implements(marshaler) || t.Implements(textMarshaler) {
		return // its own JSON form (catalog.Time, Span)
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return
		}
		if s.Type != "array" || s.Items == nil {
			bad("%s: %s is an array, the schema is not", where, t)
			return
		}
		d.compare(where+"[]", t.Elem(), s.Items, bad, seen)
	case reflect.Struct:
		if seen[t] {
			return
		}
		seen[t] = true
		fields := jsonFields(t)
		var names []string
		for n := range fields {
			names = append(names, n)
		}
		var props []string
		for n := range s.Properties {
			props = append(props, n)
		}
		sort.Strings(names)
		sort.Strings(props)
		if !slices.Equal(names, props) {
			bad("%s: %s has JSON fields %v, the schema %v", where, t, names, props)
			return
		}
		for _, n := range names {
			d.compare(where+"."+n, fields[n], s.Properties[n], bad, seen)
		}
	}
}

// jsonFields are the JSON names of a struct's fields, with their types,
// as encoding/json writes them (embedded structs' fields flattened).
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for n, typ := range jsonFields(ft) {
					out[n] = typ
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}
