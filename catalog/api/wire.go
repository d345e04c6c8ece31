package api

import (
	"encoding/json"
	"errors"

	"github.com/rewind-dev/rewind/catalog"
)

// errorBody is the JSON of a failed call.
type errorBody struct {
	Error string `json:"error"`
	// Class is the stable code: invalid, not_found, exists, conflict,
	// busy, forbidden, no_space, internal (and, from Guard,
	// unauthorized and unsupported_media_type).
	Class string `json:"code"`
}

// streamLine is one line of a streamed answer.
type streamLine struct {
	Progress *progress       `json:"progress,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    *errorBody      `json:"error,omitempty"`
}

type progress struct {
	Done  int64 `json:"done"`
	Total int64 `json:"total"`
}

// remoteError is an error the daemon reported.
type remoteError struct {
	msg   string
	class error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.class }

var classes = map[string]error{
	"invalid":   catalog.ErrInvalid,
	"not_found": catalog.ErrNotFound,
	"exists":    catalog.ErrExists,
	"conflict":  catalog.ErrConflict,
	"busy":      catalog.ErrBusy,
	"forbidden": ErrForbidden,
	"no_space":  catalog.ErrNoSpace,
}

func decodeError(b errorBody) error {
	c := classes[b.Class]
	if c == nil {
		c = errors.New(b.Class)
	}
	return &remoteError{msg: b.Error, class: c}
}

func encodeError(err error) errorBody {
	if errors.Is(err, ErrForbidden) {
		return errorBody{Error: err.Error(), Class: "forbidden"}
	}
	return errorBody{Error: err.Error(), Class: catalog.Class(err)}
}

// The bodies of routes that are not one catalog struct.
type (
	// PointRequest is POST /v1/volumes/{name}/points.
	PointRequest struct {
		Label string `json:"label"`
		At    string `json:"at,omitempty"` // WHEN; default latest
	}
	// CloneRequest is POST /v1/clones.
	CloneRequest struct {
		From string `json:"from"` // VOLUME@WHEN
		Name string `json:"name"`
	}
)
