package api

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SessionCookie is the name of the console's session cookie.
const SessionCookie = "rewind_session"

// CSRFHeader carries a session's CSRF token on every call that changes
// state.
const CSRFHeader = "X-CSRF-Token"

// SessionTTL is how long a console session lasts after signing in.
const SessionTTL = 12 * time.Hour

// Sessions signs the console's session cookies with a key derived from the
// API token: a session is ISSUED.RANDOM.MAC, checked without server state,
// so that it survives a restart of the daemon and every session ends when
// the token changes. Signing out revokes a session until it would have
// expired (kept in memory: a restart forgets revocations, not sessions,
// within SessionTTL).
//
// A session authenticates only together with its CSRF token (a MAC of
// the session, which only a page of this origin can read, from
// GET /session) on every call but GET and HEAD; the cookie is HttpOnly and
// SameSite=Strict besides.
type Sessions struct {
	key []byte

	mu      sync.Mutex
	revoked map[string]time.Time // session id -> its expiry
}

// NewSessions returns the sessions of the holder of token.
func NewSessions(token string) *Sessions {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("rewind console session key"))
	return &Sessions{key: m.Sum(nil), revoked: map[string]time.Time{}}
}

func (s *Sessions) mac(kind, id string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(kind + "|" + id))
	return hex.EncodeToString(m.Sum(nil))
}

// Issue starts a session: it sets the cookie on w and returns the
// session's CSRF token.
func (s *Sessions) Issue(w http.ResponseWriter, r *http.Request) string {
	var b [16]byte
	rand.Read(b[:])
	id := strconv.FormatInt(time.Now().Unix(), 10) + "." + hex.EncodeToString(b[:])
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: id + "." + s.mac("session", id), Path: "/",
		MaxAge: int(SessionTTL / time.Second), HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	return s.mac("csrf", id)
}

// Check returns the session a request carries, if it is valid: signed by
// this token, not expired and not revoked.
func (s *Sessions) Check(r *http.Request) (id string, ok bool) {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return "", false
	}
	i := strings.LastIndexByte(c.Value, '.')
	if i < 0 {
		return "", false
	}
	id, sum := c.Value[:i], c.Value[i+1:]
	if subtle.ConstantTimeCompare([]byte(sum), []byte(s.mac("session", id))) != 1 {
		return "", false
	}
	issued, _, _ := strings.Cut(id, ".")
	sec, err := strconv.ParseInt(issued, 10, 64)
	if err != nil || time.Now().After(time.Unix(sec, 0).Add(SessionTTL)) {
		return "", false
	}
	s.mu.Lock()
	_, gone := s.revoked[id]
	s.mu.Unlock()
	return id, !gone
}

// CSRF returns the CSRF token of session id.
func (s *Sessions) CSRF(id string) string { return s.mac("csrf", id) }

// checkCSRF reports whether r carries the CSRF token of session id.
func (s *Sessions) checkCSRF(r *http.Request, id string) bool {
	return subtle.ConstantTimeCompare([]byte(r.Header.Get(CSRFHeader)), []byte(s.CSRF(id))) == 1
}

// Revoke ends session id and clears the cookie on w.
func (s *Sessions) Revoke(w http.ResponseWriter, r *http.Request, id string) {
	now := time.Now()
	s.mu.Lock()
	for k, exp := range s.revoked {
		if now.After(exp) {
			delete(s.revoked, k)
		}
	}
	s.revoked[id] = now.Add(SessionTTL)
	s.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
}

// ValidToken reports whether token is the API token these sessions
// belong to.
func (s *Sessions) ValidToken(token string) bool {
	return subtle.ConstantTimeCompare([]byte(NewSessions(token).key), s.key) == 1
}
