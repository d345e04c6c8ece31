package objstore

import "errors"

// Errors a store's configuration can meet at Open. Each is wrapped in a
// one-line message that names the setting to fix.
var (
	// ErrBadURL: the store URL or endpoint URL is not one Open takes.
	ErrBadURL = errors.New("bad object store URL")
	// ErrNoEndpoint: an s3:// store without AWS_ENDPOINT_URL.
	ErrNoEndpoint = errors.New("no object store endpoint")
	// ErrNoCredentials: an s3:// store without AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY.
	ErrNoCredentials = errors.New("no object store credentials")
	// ErrCredentials: the object store refused the credentials.
	ErrCredentials = errors.New("the object store refused the credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
	// ErrUnreachable: the endpoint did not answer (at Open, or for longer
	// than the retry budget afterwards).
	ErrUnreachable = errors.New("cannot reach the object store")
)
