package api

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Remote says who may use the API on a TCP port: the holder of Token, from
// a page of the same origin or no page at all, naming this server by a
// host it answers to.
type Remote struct {
	// Token is the bearer token every request must carry.
	Token string
	// Addr is the address the port listens on (host:port). A request may
	// name it, any IP address, "localhost", or one of Hosts.
	Addr string
	// Hosts are further names the server answers to (--http-host): the
	// names a browser or a script uses to reach it through DNS.
	Hosts []string
	// Sessions, when set, lets the console's session cookie stand for the
	// token, with the session's CSRF token on every call but GET and HEAD.
	Sessions *Sessions
}

// Guard refuses, before next sees it, every request that Remote does not
// allow:
//
//   - a Host header that is no IP address, not "localhost", not the listen
//     address and none of Hosts: 403 (a page that rebinds its own DNS name
//     to this machine sends its own name);
//   - an Origin other than this server's, or a browser's Sec-Fetch-Site
//     "cross-site": 403 (a page the admin opened must not act for them);
//   - no "Authorization: Bearer TOKEN", or another token, and no valid
//     console session (Remote.Sessions): 401;
//   - a session without its CSRF token (X-CSRF-Token) on a call that
//     changes state: 403;
//   - a call that changes state (not GET or HEAD) with a body that is
//     neither JSON nor, for imports, raw bytes: 415 (a form post cannot
//     send JSON without a CORS preflight, which is never granted).
func Guard(next http.Handler, r Remote) http.Handler {
	if r.Token == "" {
		panic("api: Guard needs a token")
	}
	want := []byte("Bearer " + r.Token)
	return PageGuard(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if subtle.ConstantTimeCompare([]byte(req.Header.Get("Authorization")), want) != 1 {
			id, ok := "", false
			if r.Sessions != nil {
				id, ok = r.Sessions.Check(req)
			}
			if !ok {
				w.Header().Set("WWW-Authenticate", `Bearer realm="rewind"`)
				refuse(w, http.StatusUnauthorized, "send Authorization: Bearer TOKEN; the token is in DATA/api-token on the server")
				return
			}
			if req.Method != http.MethodGet && req.Method != http.MethodHead && !r.Sessions.checkCSRF(req, id) {
				refuse(w, http.StatusForbidden, "a console session must send its CSRF token in "+CSRFHeader+"; reload the page")
				return
			}
		}
		if req.Method != http.MethodGet && req.Method != http.MethodHead && !acceptedBody(req) {
			refuse(w, http.StatusUnsupportedMediaType, "send the request as Content-Type: application/json")
			return
		}
		next.ServeHTTP(w, req)
	}), r)
}

// PageGuard refuses what Guard refuses before authentication: a Host that
// is none of this server's names, and a cross-site request. The console's
// pages, which hold no data, are served behind it alone.
func PageGuard(next http.Handler, r Remote) http.Handler {
	hosts := map[string]bool{"localhost": true}
	if h, _, err := net.SplitHostPort(r.Addr); err == nil && h != "" {
		hosts[strings.ToLower(h)] = true
	}
	for _, h := range r.Hosts {
		hosts[strings.ToLower(h)] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !hostAllowed(req.Host, hosts) {
			refuse(w, http.StatusForbidden, fmt.Sprintf("Host %q is not a name of this server; add it with rewind serve --http-host", req.Host))
			return
		}
		if !sameOrigin(req) {
			refuse(w, http.StatusForbidden, "cross-site requests are refused")
			return
		}
		next.ServeHTTP(w, req)
	})
}

// hostAllowed reports whether a Host header names this server.
func hostAllowed(hostport string, names map[string]bool) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if host == "" {
		return false
	}
	return names[host] || net.ParseIP(host) != nil
}

// sameOrigin reports whether a request comes from no page, or from a page
// this server served.
func sameOrigin(req *http.Request) bool {
	if req.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return false
	}
	origin := req.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return false // includes "null", which sandboxed pages and file: send
	}
	return strings.EqualFold(u.Host, req.Host)
}

// acceptedBody reports whether a state-changing request's body is of a type
// that a cross-site form cannot send.
func acceptedBody(req *http.Request) bool {
	ct := strings.ToLower(strings.TrimSpace(strings.Split(req.Header.Get("Content-Type"), ";")[0]))
	switch ct {
	case "application/json":
		return true
	case "application/octet-stream":
		return isStream(req)
	case "":
		return req.ContentLength == 0 && req.Method == http.MethodDelete
	}
	return false
}

// isStream reports whether a request is an import whose body is the raw
// bytes of the image.
func isStream(req *http.Request) bool {
	ct, _, _ := strings.Cut(req.Header.Get("Content-Type"), ";")
	return req.URL.Path == "/v1/imports" && strings.EqualFold(strings.TrimSpace(ct), "application/octet-stream")
}

func refuse(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	class := "forbidden"
	switch status {
	case http.StatusUnauthorized:
		class = "unauthorized"
	case http.StatusUnsupportedMediaType:
		class = "unsupported_media_type"
	}
	json.NewEncoder(w).Encode(errorBody{Error: msg, Class: class})
}
