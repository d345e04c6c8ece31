package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-dev/rewind/blockstore/objstore"
	"github.com/rewind-dev/rewind/blockstore/objstore/weed"
)

// env is a Getenv over a fixed set of variables.
func env(kv ...string) func(string) string {
	return func(k string) string {
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i] == k {
				return kv[i+1]
			}
		}
		return ""
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestOpenErrors(t *testing.T) {
	creds := []string{"AWS_ACCESS_KEY_ID", "ak", "AWS_SECRET_ACCESS_KEY", "sk"}
	dead := "http://" + closedPort(t)
	for _, tc := range []struct {
		url    string
		getenv func(string) string
		want   error
		says   string
	}{
		{"", env(), objstore.ErrBadURL, "s3://BUCKET"},
		{"s3://", env(), objstore.ErrBadURL, "bucket name"},
		{"s3://Bad_Bucket", env(), objstore.ErrBadURL, "bucket name"},
		{"s3://bucket:9000/x", env(), objstore.ErrBadURL, "AWS_ENDPOINT_URL"},
		{"s3://bucket/a/../b", env(), objstore.ErrBadURL, "prefix"},
		{"ftp://host/x", env(), objstore.ErrBadURL, "file:///DIR"},
		{"file://relative/x", env(), objstore.ErrBadURL, "file:///DIR"},
		{"s3://bucket", env(creds...), objstore.ErrNoEndpoint, "set AWS_ENDPOINT_URL"},
		{"s3://bucket", env("AWS_ENDPOINT_URL", dead), objstore.ErrNoCredentials, "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"},
		{"s3://bucket", env(append(creds, "AWS_ENDPOINT_URL", "127.0.0.1:9000")...), objstore.ErrBadURL, "AWS_ENDPOINT_URL"},
		{"s3://bucket", env(append(creds, "AWS_ENDPOINT_URL", dead)...), objstore.ErrUnreachable, "connection refused; check AWS_ENDPOINT_URL"},
	} {
		_, err := objstore.Open(context.Background(), tc.url, objstore.Options{Getenv: tc.getenv})
		t.Logf("open %q: %v", tc.url, err)
		if !errors.Is(err, tc.want) {
			t.Errorf("open %q: %v, want %v", tc.url, err, tc.want)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, tc.says) || strings.Contains(msg, "\n") {
			t.Errorf("open %q: %q is not one line saying %q", tc.url, msg, tc.says)
		}
	}
}

func TestOpenEndpointOption(t *testing.T) {
	dead := "http://" + closedPort(t)
	_, err := objstore.Open(context.Background(), "s3://bucket", objstore.Options{
		Endpoint: dead,
		Getenv:   env("AWS_ENDPOINT_URL", "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID", "ak", "AWS_SECRET_ACCESS_KEY", "sk"),
	})
	if !errors.Is(err, objstore.ErrUnreachable) || !strings.Contains(err.Error(), dead) {
		t.Fatalf("open with Options.Endpoint %s: %v", dead, err)
	}
}

func TestOpenWrongCredentials(t *testing.T) {
	srv := weed.Shared(t)
	for _, kv := range [][2]string{{"AWS_ACCESS_KEY_ID", "nobody"}, {"AWS_SECRET_ACCESS_KEY", "wrong"}} {
		getenv := func(k string) string {
			if k == kv[0] {
				return kv[1]
			}
			return srv.Getenv(k)
		}
		_, err := objstore.Open(context.Background(), srv.NewBucket(t), objstore.Options{Getenv: getenv})
		t.Logf("wrong %s: %v", kv[0], err)
		if !errors.Is(err, objstore.ErrCredentials) || strings.Contains(err.Error(), "\n") {
			t.Errorf("open with a wrong %s: %v, want one line with ErrCredentials", kv[0], err)
		}
	}
}

func TestOpenFileURL(t *testing.T) {
	dir := t.TempDir()
	b, err := objstore.Open(context.Background(), "file://"+dir, objstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Put(context.Background(), "x/y", bytes.NewReader([]byte("hi")), 2); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "x", "y")); err != nil || string(got) != "hi" {
		t.Fatalf("file:// store wrote %q, %v into its directory", got, err)
	}
}

func TestReadOnly(t *testing.T) {
	ctx := context.Background()
	srv := weed.Shared(t)
	dir := t.TempDir()
	rw, err := objstore.Open(ctx, dir, objstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := rw.Put(ctx, "kept", bytes.NewReader([]byte("v1")), 2); err != nil {
		t.Fatal(err)
	}
	bucket := srv.NewBucket(t)
	rwS3 := openS3(t, srv, bucket)
	if err := rwS3.Put(ctx, "kept", bytes.NewReader([]byte("v1")), 2); err != nil {
		t.Fatal(err)
	}
	for _, url := range []string{dir, bucket} {
		ro, err := objstore.Open(ctx, url, objstore.Options{ReadOnly: true, Getenv: srv.Getenv})
		if err != nil {
			t.Fatal(err)
		}
		if err := ro.Put(ctx, "kept", bytes.NewReader([]byte("v2")), 2); !errors.Is(err, objstore.ErrReadOnly) {
			t.Errorf("%s: put: %v, want ErrReadOnly", url, err)
		}
		if err := ro.Delete(ctx, "kept"); !errors.Is(err, objstore.ErrReadOnly) {
			t.Errorf("%s: delete: %v, want ErrReadOnly", url, err)
		}
		if got, err := ro.GetRange(ctx, "kept", 0, -1); err != nil || string(got) != "v1" {
			t.Errorf("%s: read %q, %v; want the untouched v1", url, got, err)
		}
	}
	for _, url := range []string{filepath.Join(dir, "absent"), srv.NewBucket(t)} {
		if _, err := objstore.Open(ctx, url, objstore.Options{ReadOnly: true, Getenv: srv.Getenv}); !errors.Is(err, objstore.ErrNotExist) {
			t.Errorf("read-only open of a missing %s: %v, want ErrNotExist", url, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "absent")); err == nil {
		t.Error("a read-only open created its directory")
	}
}
