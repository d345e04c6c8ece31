package api

import (
	"encoding/json"
	"errors"

	"github.com/rewind-dev/rewind/catalog"
)

// errorBody is the JSON of a failed call.
type errorBody struct {
	Error string `json:"error"`
	Class string `json:"class"`
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

// The requests of calls whose arguments are not one catalog struct.
type (
	nameReq struct {
		Name  string `json:"name"`
		Force bool   `json:"force,omitempty"`
	}
	diffReq struct {
		From string `json:"from"`
		To   string `json:"to"`
	}
	pointReq struct {
		Spec   string `json:"spec,omitempty"`
		Volume string `json:"volume,omitempty"`
		Label  string `json:"label,omitempty"`
	}
	cloneReq struct {
		Spec string `json:"spec"`
		Name string `json:"name"`
	}
)
