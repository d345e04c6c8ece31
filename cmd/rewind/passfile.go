package main

import (
	"net/http"
	"os"

	"github.com/rewind-dev/rewind/catalog/api"
)

// withPassedFile decodes the body of a call that may come with a file
// the caller opened and passed on the local socket (a recovery's target,
// a protection's primary), and runs do with both. The file is closed
// unless do succeeds: then it is the daemon's.
func withPassedFile[T, R any](r *http.Request, do func(req T, f *os.File) (R, error)) (R, error) {
	f := api.PassedFile(r.Context())
	req, err := api.Decode[T](r)
	var out R
	if err == nil {
		out, err = do(req, f)
	}
	if err != nil && f != nil {
		f.Close()
	}
	return out, err
}
