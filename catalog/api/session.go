package api

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rewind-dev/rewind/catalog"
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
// expired; KeepRevocations saves the revocations in a file, so that a
// restarted daemon still refuses a signed-out cookie.
//
// A session authenticates only together with its CSRF token (a MAC of
// the session, which only a page of this origin can read, from
// GET /session) on every call but GET and HEAD; the cookie is HttpOnly and
// SameSite=Strict besides.
type Sessions struct {
	key []byte

	mu      sync.Mutex
	revoked map[string]time.Time // session id -> its expiry
	file    string               // where revocations are saved; "" for nowhere
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

// Revoke ends session id and clears the cookie on w. The session ends
// in this process even when the revocation cannot be saved; the error
// says so.
func (s *Sessions) Revoke(w http.ResponseWriter, r *http.Request, id string) error {
	now := time.Now()
	s.mu.Lock()
	for k, exp := range s.revoked {
		if now.After(exp) {
			delete(s.revoked, k)
		}
	}
	s.revoked[id] = now.Add(SessionTTL)
	err := s.saveLocked()
	s.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	return err
}

// KeepRevocations loads the revocations saved in file (none if it does
// not exist) and saves every later one there: a line "SESSION EXPIRY"
// each (EXPIRY in Unix seconds), those expired left out. A file that
// cannot be read is an error: forgetting it would let signed-out
// sessions back in.
func (s *Sessions) KeepRevocations(file string) error {
	b, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read the console's sign-outs: %w", err)
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, line := range strings.Split(string(b), "\n") {
		if line == "" {
			continue
		}
		id, exp, ok := strings.Cut(line, " ")
		sec, err := strconv.ParseInt(exp, 10, 64)
		if !ok || err != nil || id == "" {
			return fmt.Errorf("the console's sign-outs in %s are damaged at line %d: delete the file and change the API token (every console session ends with it)", file, i+1)
		}
		if t := time.Unix(sec, 0); t.After(now) {
			s.revoked[id] = t
		}
	}
	s.file = file
	return nil
}

// saveLocked writes the revocations to s.file, whole or not at all.
func (s *Sessions) saveLocked() error {
	if s.file == "" {
		return nil
	}
	var b strings.Builder
	for id, exp := range s.revoked {
		fmt.Fprintf(&b, "%s %d\n", id, exp.Unix())
	}
	if err := catalog.WriteFileDurably(s.file, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("save the sign-out: %w", err)
	}
	return nil
}

// ValidToken reports whether token is the API token these sessions
// belong to.
func (s *Sessions) ValidToken(token string) bool {
	return subtle.ConstantTimeCompare([]byte(NewSessions(token).key), s.key) == 1
}
