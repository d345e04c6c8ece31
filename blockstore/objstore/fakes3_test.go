package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/blockstore/objstore"
)

// fakeS3 serves bucket "bkt" holding object "obj" the way some servers do:
// the whole object whatever the Range header asks, after answering the
// first `busy` GETs with 503 SlowDown and cutting the next `cuts` bodies
// in half.
type fakeS3 struct {
	obj  []byte
	busy atomic.Int64
	cuts atomic.Int64
	gets atomic.Int64
}

func (f *fakeS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	switch {
	case r.URL.Query().Has("list-type"):
		h.Set("Content-Type", "application/xml")
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?>`+
			`<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>bkt</Name><IsTruncated>false</IsTruncated></ListBucketResult>`)
	case r.URL.Path == "/bkt/obj" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		if r.Method == http.MethodGet {
			f.gets.Add(1)
			if f.busy.Add(-1) >= 0 {
				h.Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusServiceUnavailable)
				io.WriteString(w, `<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
				return
			}
		}
		h.Set("ETag", `"0123"`)
		h.Set("Last-Modified", time.Unix(0, 0).UTC().Format(http.TimeFormat))
		h.Set("Content-Length", strconv.Itoa(len(f.obj)))
		if r.Method == http.MethodGet {
			if f.cuts.Add(-1) >= 0 {
				w.Write(f.obj[:len(f.obj)/2])
				panic(http.ErrAbortHandler) // drops the connection
			}
			w.Write(f.obj)
		}
	default:
		w.WriteHeader(http.StatusNotImplemented)
	}
}

func openFake(t *testing.T, f *fakeS3) *objstore.S3 {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	s, err := objstore.OpenS3(context.Background(), objstore.S3Config{
		Bucket: "bkt", Endpoint: srv.URL, AccessKey: "ak", SecretKey: "sk", RetryFor: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestS3RangeIgnored: GetRange keeps its semantics when the server sends
// the whole object instead of the range.
func TestS3RangeIgnored(t *testing.T) {
	s := openFake(t, &fakeS3{obj: []byte("0123456789")})
	for _, tc := range []struct {
		off, n int64
		want   string
		short  bool
	}{
		{3, 4, "3456", false},
		{5, -1, "56789", false},
		{8, 5, "89", true},
		{12, 3, "", true},
		{12, -1, "", false},
	} {
		got, err := s.GetRange(context.Background(), "obj", tc.off, tc.n)
		if string(got) != tc.want || errors.Is(err, io.ErrUnexpectedEOF) != tc.short || (err != nil && !tc.short) {
			t.Errorf("[%d,+%d): %q, %v; want %q (past the end: %v)", tc.off, tc.n, got, err, tc.want, tc.short)
		}
	}
}

// TestS3RetriesSlowDownAndCutBodies: 503 SlowDown answers and bodies cut
// short are retried, and a cut body is never returned.
func TestS3RetriesSlowDownAndCutBodies(t *testing.T) {
	f := &fakeS3{obj: []byte("0123456789")}
	f.busy.Store(2)
	f.cuts.Store(2)
	s := openFake(t, f)
	for _, n := range []int64{-1, 10} {
		got, err := s.GetRange(context.Background(), "obj", 0, n)
		if err != nil || !bytes.Equal(got, f.obj) {
			t.Fatalf("read through SlowDown answers and cut bodies: %q, %v", got, err)
		}
	}
	if n := f.gets.Load(); n != 6 {
		t.Fatalf("%d GETs for 2 SlowDown answers, 2 cut bodies and 2 successes", n)
	}
}
