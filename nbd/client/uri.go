package client

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// DefaultPort is the IANA port for NBD.
const DefaultPort = "10809"

// Target is a parsed NBD URI.
type Target struct {
	Network string // "tcp" or "unix"
	Address string // host:port, or the socket path
	Export  string
	TLS     bool   // nbds:// or nbds+unix://
	Host    string // the host name, for TLS server name checks (empty for unix)
}

// ParseURI parses an NBD URI as libnbd and qemu write it:
// nbd://HOST[:PORT]/EXPORT, nbds://..., nbd+unix:///EXPORT?socket=PATH and
// nbds+unix:///EXPORT?socket=PATH. The export name is the path without
// its first slash (percent-decoded); none means the default export "".
func ParseURI(uri string) (Target, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return Target{}, fmt.Errorf("%w: %q: %v", ErrBadURI, uri, err)
	}
	var t Target
	switch u.Scheme {
	case "nbd", "nbds":
		t.Network = "tcp"
	case "nbd+unix", "nbds+unix":
		t.Network = "unix"
	default:
		return Target{}, fmt.Errorf("%w: %q: the scheme must be nbd, nbds, nbd+unix or nbds+unix", ErrBadURI, uri)
	}
	t.TLS = strings.HasPrefix(u.Scheme, "nbds")
	if u.User != nil || u.Fragment != "" || u.Opaque != "" {
		return Target{}, fmt.Errorf("%w: %q: user info, fragments and opaque URIs are not supported", ErrBadURI, uri)
	}
	t.Export = strings.TrimPrefix(u.Path, "/")
	q := u.Query()
	if t.Network == "unix" {
		if u.Host != "" {
			return Target{}, fmt.Errorf("%w: %q: a unix URI has no host (nbd+unix:///EXPORT?socket=PATH)", ErrBadURI, uri)
		}
		t.Address = q.Get("socket")
		if t.Address == "" {
			return Target{}, fmt.Errorf("%w: %q: a unix URI needs ?socket=PATH", ErrBadURI, uri)
		}
		q.Del("socket")
	} else {
		t.Host = u.Hostname()
		if t.Host == "" {
			return Target{}, fmt.Errorf("%w: %q: no host (nbd://HOST[:PORT]/EXPORT)", ErrBadURI, uri)
		}
		port := u.Port()
		if port == "" {
			port = DefaultPort
		}
		t.Address = net.JoinHostPort(t.Host, port)
	}
	for k := range q {
		return Target{}, fmt.Errorf("%w: %q: unknown query parameter %q", ErrBadURI, uri, k)
	}
	if len(t.Export) > maxNameLen {
		return Target{}, fmt.Errorf("%w: %q: export name longer than %d bytes", ErrBadURI, uri, maxNameLen)
	}
	return t, nil
}

// String returns the target as a URI.
func (t Target) String() string {
	scheme := "nbd"
	if t.TLS {
		scheme = "nbds"
	}
	if t.Network == "unix" {
		return scheme + "+unix:///" + url.PathEscape(t.Export) + "?socket=" + url.QueryEscape(t.Address)
	}
	return scheme + "://" + t.Address + "/" + url.PathEscape(t.Export)
}
