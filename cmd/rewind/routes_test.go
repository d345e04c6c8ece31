package main

import (
	"testing"

	"github.com/rewind-dev/rewind/catalog/api"
)

// TestOpenAPIMatchesRoutes: the OpenAPI document at /v1/openapi.json
// describes exactly the daemon's route table, the catalog's routes and
// the daemon's own, with the JSON fields of each body and answer.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	d := &daemon{}
	if err := api.CheckOpenAPI(api.OpenAPI(), d.routes(t.Context(), api.ServerInfo{})); err != nil {
		t.Fatal(err)
	}
}
