package objstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"

	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// Options tune Open.
type Options struct {
	// Endpoint overrides AWS_ENDPOINT_URL (rewind replicate --to-endpoint).
	Endpoint string
	// ReadOnly makes Put and Delete return ErrReadOnly, and leaves a
	// missing bucket or directory uncreated (an error instead).
	ReadOnly bool
	// Getenv looks up the AWS_* variables; nil means os.Getenv.
	Getenv func(string) string
}

// Open opens the backend a store URL names: s3://BUCKET[/PREFIX] is a
// bucket on the S3 endpoint of AWS_ENDPOINT_URL (or o.Endpoint), with
// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and
// AWS_REGION (default us-east-1); a path or file:///PATH is a directory.
//
// Open checks access at once, so a wrong endpoint or wrong credentials
// fail here with a one-line error that says what to fix (ErrBadURL,
// ErrNoEndpoint, ErrNoCredentials, ErrUnreachable, ErrCredentials).
func Open(ctx context.Context, rawURL string, o Options) (Backend, error) {
	var b Backend
	var err error
	switch {
	case strings.HasPrefix(rawURL, "s3://"):
		var cfg S3Config
		if cfg, err = s3ConfigFor(rawURL, o); err == nil {
			b, err = OpenS3(ctx, cfg)
		}
	default:
		var dir string
		if dir, err = dirFor(rawURL); err == nil {
			b, err = openDir(dir, o.ReadOnly)
		}
	}
	if err != nil {
		return nil, err
	}
	if o.ReadOnly {
		b = ReadOnly(b)
	}
	return b, nil
}

const urlForms = "use s3://BUCKET[/PREFIX], a directory, or file:///DIR"

func dirFor(rawURL string) (string, error) {
	switch {
	case rawURL == "":
		return "", fmt.Errorf("%w: empty; %s", ErrBadURL, urlForms)
	case strings.HasPrefix(rawURL, "file://"):
		u, err := url.Parse(rawURL)
		if err != nil || (u.Host != "" && u.Host != "localhost") || !strings.HasPrefix(u.Path, "/") || u.RawQuery != "" || u.Fragment != "" {
			return "", fmt.Errorf("%w %q: %s", ErrBadURL, rawURL, urlForms)
		}
		return u.Path, nil
	case strings.Contains(rawURL, "://"):
		return "", fmt.Errorf("%w %q: %s", ErrBadURL, rawURL, urlForms)
	}
	return rawURL, nil
}

func openDir(dir string, readOnly bool) (Backend, error) {
	if readOnly {
		fi, err := os.Stat(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("objstore: directory %s: %w (opened read-only, so it was not created)", dir, ErrNotExist)
		}
		if err != nil {
			return nil, fmt.Errorf("objstore: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("objstore: %s is not a directory", dir)
		}
	}
	return OpenDir(dir)
}

// s3ConfigFor reads an s3:// URL and the environment.
func s3ConfigFor(rawURL string, o Options) (S3Config, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	bucket, prefix, err := parseS3URL(rawURL)
	if err != nil {
		return S3Config{}, err
	}
	cfg := S3Config{
		Bucket:       bucket,
		Prefix:       prefix,
		Endpoint:     o.Endpoint,
		EndpointFrom: "the endpoint given",
		AccessKey:    getenv("AWS_ACCESS_KEY_ID"),
		SecretKey:    getenv("AWS_SECRET_ACCESS_KEY"),
		SessionToken: getenv("AWS_SESSION_TOKEN"),
		Region:       getenv("AWS_REGION"),
		ReadOnly:     o.ReadOnly,
	}
	if cfg.Endpoint == "" {
		cfg.Endpoint, cfg.EndpointFrom = getenv("AWS_ENDPOINT_URL"), "AWS_ENDPOINT_URL"
	}
	if cfg.Endpoint == "" {
		return S3Config{}, fmt.Errorf("%w for %s: set AWS_ENDPOINT_URL to the object store's URL (https://s3.amazonaws.com for AWS)", ErrNoEndpoint, rawURL)
	}
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		return S3Config{}, fmt.Errorf("%w for %s: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", ErrNoCredentials, rawURL)
	}
	return cfg, nil
}

// parseS3URL splits s3://BUCKET[/PREFIX].
func parseS3URL(rawURL string) (bucket, prefix string, err error) {
	bad := func(why string) error {
		return fmt.Errorf("%w %q: %s; use s3://BUCKET[/PREFIX]", ErrBadURL, rawURL, why)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", "", bad("not a URL")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Port() != "" {
		return "", "", bad("only a bucket and a prefix may follow s3:// (the endpoint comes from AWS_ENDPOINT_URL)")
	}
	if err := s3utils.CheckValidBucketNameStrict(u.Host); err != nil {
		return "", "", bad(fmt.Sprintf("bucket name %q: %v", u.Host, err))
	}
	prefix = strings.Trim(u.Path, "/")
	if prefix != "" && CheckName(prefix) != nil {
		return "", "", bad(fmt.Sprintf("prefix %q has an empty, . or .. part", prefix))
	}
	return u.Host, prefix, nil
}
