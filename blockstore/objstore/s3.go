package objstore

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config says where an S3 backend is and how to sign in.
type S3Config struct {
	Bucket string
	// Prefix, without slashes at its ends, is put before every object
	// name ("" for the whole bucket).
	Prefix string
	// Endpoint is http://HOST[:PORT] or https://HOST[:PORT]; https
	// verifies the server's certificate.
	Endpoint string
	// EndpointFrom names where Endpoint came from in error messages
	// ("AWS_ENDPOINT_URL").
	EndpointFrom string
	AccessKey    string
	SecretKey    string
	SessionToken string
	// Region defaults to us-east-1.
	Region string
	// ReadOnly makes a missing bucket an error instead of creating it.
	ReadOnly bool
	// RetryFor bounds how long a call retries transient errors, counted
	// from its first failure; 0 means DefaultRetryFor.
	RetryFor time.Duration
}

// DefaultRetryFor is how long a call keeps retrying an endpoint that fails
// transiently (refused or dropped connections, timeouts, HTTP 5xx, 429,
// SlowDown) before it gives up with ErrUnreachable. It outlasts a restart
// of the object store's gateway.
const DefaultRetryFor = 30 * time.Second

// S3 is a Backend on a bucket of an S3-compatible object store, with
// path-style addressing. Object name N is the key PREFIX/N.
//
// Every call retries transient errors with exponential backoff (100 ms
// doubling to 2 s, with jitter) for at most RetryFor from its first
// failure, and bounds each attempt: connecting takes at most 5 s, the
// response headers at most 60 s, and a whole attempt at most 1 min plus
// 4 s per MiB it moves. So a dead or black-holed endpoint fails a call
// within about RetryFor plus one attempt, never minutes of minio-go's own
// retries (which are off). Put retries a reader it can seek (io.ReaderAt
// and io.Seeker, such as *os.File or *bytes.Reader); any other reader is
// read into memory first. List reads the whole listing, sorts it and then
// calls fn, so it holds every name under the prefix in memory.
type S3 struct {
	client   *minio.Client
	bucket   string
	prefix   string // "" or ending in "/"
	endpoint string
	hint     string
	retryFor time.Duration
}

var _ Backend = (*S3)(nil)

// OpenS3 connects to the bucket, creating it if it is missing (unless
// cfg.ReadOnly), and checks that the credentials are accepted.
func OpenS3(ctx context.Context, cfg S3Config) (*S3, error) {
	ep, err := url.Parse(cfg.Endpoint)
	if err != nil || (ep.Scheme != "http" && ep.Scheme != "https") || ep.Host == "" ||
		(ep.Path != "" && ep.Path != "/") || ep.User != nil || ep.RawQuery != "" {
		return nil, fmt.Errorf("%w: %s=%q: want http://HOST[:PORT] or https://HOST[:PORT]", ErrBadURL, or(cfg.EndpointFrom, "endpoint"), cfg.Endpoint)
	}
	region := or(cfg.Region, "us-east-1")
	client, err := minio.New(ep.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken),
		Secure:       ep.Scheme == "https",
		Transport:    newTransport(),
		Region:       region,
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   1, // retries are ours, bounded by RetryFor
		// minio-go sends x-amz-checksum-* headers (Put) only from a
		// client that may send trailers.
		TrailingHeaders: true,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s=%q: %v", ErrBadURL, or(cfg.EndpointFrom, "endpoint"), cfg.Endpoint, err)
	}
	s := &S3{
		client:   client,
		bucket:   cfg.Bucket,
		endpoint: ep.Scheme + "://" + ep.Host,
		hint:     "check " + or(cfg.EndpointFrom, "the endpoint"),
		retryFor: cfg.RetryFor,
	}
	if cfg.Prefix != "" {
		s.prefix = cfg.Prefix + "/"
	}
	if s.retryFor <= 0 {
		s.retryFor = DefaultRetryFor
	}
	if err := s.ensureBucket(ctx, region, cfg.ReadOnly); err != nil {
		return nil, err
	}
	return s, nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second}).DialContext,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		ExpectContinueTimeout: time.Second,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		DisableCompression:    true,
	}
}

// ensureBucket lists one key to check the endpoint and the credentials at
// once, and creates the bucket if it is missing. Only HTTP-level transient
// errors are retried here: a refused connection at open is a wrong
// endpoint far more often than a restarting one.
func (s *S3) ensureBucket(ctx context.Context, region string, readOnly bool) error {
	bo := s.backoff()
	for {
		err := s.probe(ctx)
		if errorCode(err) == minio.NoSuchBucket {
			if readOnly {
				return fmt.Errorf("objstore: bucket %s at %s: %w (opened read-only, so it was not created)", s.bucket, s.endpoint, ErrNotExist)
			}
			ctx1, cancel := context.WithTimeout(ctx, attemptTimeout(0))
			err = s.client.MakeBucket(ctx1, s.bucket, minio.MakeBucketOptions{Region: region})
			cancel()
			if c := errorCode(err); c == minio.BucketAlreadyOwnedByYou || c == "BucketAlreadyExists" {
				err = s.probe(ctx) // created meanwhile by someone: ours only if we can list it
			}
		}
		if err == nil {
			return nil
		}
		if kind(err) == failNetwork || !bo.again(ctx, err) {
			return s.wrap(ctx, "open", "", err)
		}
	}
}

func (s *S3) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout(0))
	defer cancel()
	for o := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix, MaxKeys: 1}) {
		if o.Err != nil {
			return o.Err
		}
		break
	}
	return nil
}

// String is the store's URL.
func (s *S3) String() string {
	return "s3://" + strings.TrimSuffix(s.bucket+"/"+s.prefix, "/")
}

func (s *S3) key(name string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	return s.prefix + name, nil
}

// Put uploads the object in one request (multipart from 16 MiB), which
// S3 makes visible at once when it completes.
func (s *S3) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	key, err := s.key(name)
	if err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("objstore: put %s: negative size %d", name, size)
	}
	body, err := rewindable(r, size)
	if err != nil {
		return fmt.Errorf("objstore: put %s: %w", name, err)
	}
	opts := minio.PutObjectOptions{
		ContentType:          "application/octet-stream",
		DisableContentSha256: true, // no payload hash in the signature: a checksum guards the body
	}
	if size <= singlePutMax {
		// A CRC-32C in x-amz-checksum-crc32c, which the store checks
		// before it accepts the object, costs a tenth of the CPU of
		// Content-MD5 (MD5 was 8% of an import's CPU).
		var sum string
		if br, ok := r.(BytesReader); ok && int64(br.Len()) == size && len(br.b) == br.Len() {
			sum = crc32cHeader(crc32.Checksum(br.b, castagnoli)) // in place, without copying it out
		} else if sum, err = crc32c(body); err != nil {
			return fmt.Errorf("objstore: put %s: %w", name, err)
		}
		opts.UserMetadata = map[string]string{"X-Amz-Checksum-Crc32c": sum}
	} else {
		opts.SendContentMd5 = true // and minio-go adds a CRC-32C to each part
	}
	bo := s.backoff()
	for {
		if _, err = body.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("objstore: put %s: %w", name, err)
		}
		ctx1, cancel := context.WithTimeout(ctx, attemptTimeout(size))
		_, err = s.client.PutObject(ctx1, s.bucket, key, body, size, opts)
		cancel()
		if err == nil || !bo.again(ctx, err) {
			return s.wrap(ctx, "put", name, err)
		}
	}
}

// singlePutMax is the largest object that minio-go puts in one request
// (its minimum part size); larger ones go up in parts.
const singlePutMax = 16 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c returns the CRC-32C of what r holds, base64-encoded as S3 wants
// it, and leaves r where it found it.
func crc32c(r io.ReadSeeker) (string, error) {
	h := crc32.New(castagnoli)
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	return crc32cHeader(h.Sum32()), nil
}

// crc32cHeader encodes a CRC-32C as x-amz-checksum-crc32c wants it.
func crc32cHeader(sum uint32) string {
	return base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, sum))
}

// BytesReader reads b, and lets S3's Put checksum b where it lies.
type BytesReader struct {
	*bytes.Reader
	b []byte
}

// NewBytesReader returns a BytesReader of b.
func NewBytesReader(b []byte) BytesReader { return BytesReader{bytes.NewReader(b), b} }

// rewindable returns the next size bytes of r as a reader that can start
// again.
func rewindable(r io.Reader, size int64) (io.ReadSeeker, error) {
	type readSeekerAt interface {
		io.ReaderAt
		io.Seeker
	}
	if ra, ok := r.(readSeekerAt); ok {
		pos, err := ra.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, err
		}
		if size > 0 { // fail now on a short source, not as a retried upload
			if _, err := ra.ReadAt(make([]byte, 1), pos+size-1); err == io.EOF {
				return nil, fmt.Errorf("source shorter than %d bytes: %w", size, io.ErrUnexpectedEOF)
			} else if err != nil {
				return nil, err
			}
		}
		return io.NewSectionReader(ra, pos, size), nil
	}
	b := make([]byte, size)
	if n, err := io.ReadFull(r, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%d of %d bytes: %w", n, size, err)
	}
	return bytes.NewReader(b), nil
}

// GetRange reads with a ranged GET.
func (s *S3) GetRange(ctx context.Context, name string, off, n int64) ([]byte, error) {
	key, err := s.key(name)
	if err != nil {
		return nil, err
	}
	if off < 0 {
		return nil, fmt.Errorf("objstore: get %s: negative offset %d", name, off)
	}
	if n == 0 { // no empty range in HTTP; still say whether it exists
		if _, err := s.Stat(ctx, name); err != nil {
			return nil, err
		}
		return []byte{}, nil
	}
	bo := s.backoff()
	for {
		ctx1, cancel := context.WithCancelCause(ctx)
		b, short, err := s.get(ctx1, cancel, key, off, n)
		cancel(nil)
		switch {
		case err == nil && short:
			return b, fmt.Errorf("objstore: %s: %d bytes at %d: %w", name, n, off, io.ErrUnexpectedEOF)
		case err == nil:
			return b, nil
		case !bo.again(ctx, err):
			return nil, s.wrap(ctx, "get", name, err)
		}
	}
}

// get makes one attempt. short reports a range past the end of the
// object; a body cut off before its Content-Length is an error (retried).
// The transport bounds the wait for the headers, and stop, called after
// attemptTimeout of the body's length, bounds the body.
func (s *S3) get(ctx context.Context, stop context.CancelCauseFunc, key string, off, n int64) (b []byte, short bool, err error) {
	var opts minio.GetObjectOptions
	ranged := true
	switch {
	case n < 0 && off == 0:
		ranged = false
	case n < 0:
		err = opts.SetRange(off, 0)
	default:
		err = opts.SetRange(off, off+n-1)
	}
	if err != nil {
		return nil, false, err
	}
	body, info, hdr, err := minio.Core{Client: s.client}.GetObject(ctx, s.bucket, key, opts)
	if errorStatus(err) == http.StatusRequestedRangeNotSatisfiable {
		return []byte{}, n > 0, nil // off is at or past the end
	}
	if err != nil {
		return nil, false, err
	}
	defer body.Close()
	timer := time.AfterFunc(attemptTimeout(info.Size), func() { stop(errStalled) })
	defer timer.Stop()
	defer func() {
		if err != nil && context.Cause(ctx) == errStalled {
			err = errStalled
		}
	}()
	avail := info.Size // Content-Length of this response, or -1
	if ranged && hdr.Get("Content-Range") == "" {
		// The server sent the whole object: skip to off ourselves.
		_, err := io.CopyN(io.Discard, body, off)
		if err == io.EOF { // a body cut short ends in io.ErrUnexpectedEOF
			return []byte{}, n > 0, nil
		}
		if err != nil {
			return nil, false, err
		}
		if avail >= 0 {
			avail -= off
		}
	}
	want := avail
	if n >= 0 && n < avail {
		want = n
	}
	if avail < 0 { // no Content-Length
		b, err = io.ReadAll(body)
		if err != nil {
			return nil, false, err
		}
		if n >= 0 && int64(len(b)) > n {
			b = b[:n]
		}
		return b, n >= 0 && int64(len(b)) < n, nil
	}
	b = make([]byte, want)
	if _, err := io.ReadFull(body, b); err != nil {
		return nil, false, err
	}
	return b, n >= 0 && want < n, nil
}

// Stat is a HEAD request.
func (s *S3) Stat(ctx context.Context, name string) (int64, error) {
	key, err := s.key(name)
	if err != nil {
		return 0, err
	}
	bo := s.backoff()
	for {
		ctx1, cancel := context.WithTimeout(ctx, attemptTimeout(0))
		info, err := s.client.StatObject(ctx1, s.bucket, key, minio.StatObjectOptions{})
		cancel()
		if err == nil {
			return info.Size, nil
		}
		if !bo.again(ctx, err) {
			return 0, s.wrap(ctx, "stat", name, err)
		}
	}
}

// List pages through the listing, resuming after the last key received
// when an attempt fails, then sorts it: not every S3 server lists in
// byte order ("a-b" before "a/b").
func (s *S3) List(ctx context.Context, prefix string, fn func(Object) error) error {
	var objs []Object
	last := ""
	bo := s.backoff()
	for {
		before := len(objs)
		err := s.listFrom(ctx, prefix, last, func(o Object) {
			objs = append(objs, o)
		})
		if len(objs) > before {
			last = s.prefix + objs[len(objs)-1].Name
			bo.reset()
		}
		if err == nil {
			break
		}
		if !bo.again(ctx, err) {
			return s.wrap(ctx, "list", prefix, err)
		}
	}
	return sortedEach(ctx, objs, fn)
}

func (s *S3) listFrom(ctx context.Context, prefix, after string, add func(Object)) error {
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout(0))
	defer cancel()
	opts := minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true, StartAfter: after}
	for o := range s.client.ListObjects(ctx, s.bucket, opts) {
		if o.Err != nil {
			return o.Err
		}
		name, ok := strings.CutPrefix(o.Key, s.prefix)
		if !ok || CheckName(name) != nil { // directory markers and foreign keys
			continue
		}
		add(Object{Name: name, Size: o.Size})
	}
	return nil
}

// Delete removes the key; S3 answers a missing key with success too.
func (s *S3) Delete(ctx context.Context, name string) error {
	key, err := s.key(name)
	if err != nil {
		return err
	}
	bo := s.backoff()
	for {
		ctx1, cancel := context.WithTimeout(ctx, attemptTimeout(0))
		err := s.client.RemoveObject(ctx1, s.bucket, key, minio.RemoveObjectOptions{})
		cancel()
		if err == nil || errorCode(err) == minio.NoSuchKey {
			return nil
		}
		if !bo.again(ctx, err) {
			return s.wrap(ctx, "delete", name, err)
		}
	}
}
