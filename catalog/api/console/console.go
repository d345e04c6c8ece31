package console

import (
	"embed"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"strings"

	"github.com/rewind-dev/rewind/catalog/api"
)

//go:embed static
var static embed.FS

// security are the headers of every answer.
var security = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
	"X-Content-Type-Options": "nosniff",
	"X-Frame-Options":        "DENY",
	"Referrer-Policy":        "no-referrer",
}

// Handler serves the console for the holder of remote's token; remote's
// Sessions must be set, and the same Sessions given to api.Guard.
// signedIn, when not nil, hears of each sign-in, with whether its token
// was right.
func Handler(remote api.Remote, signedIn func(ok bool)) http.Handler {
	if remote.Sessions == nil {
		panic("console: Handler needs Remote.Sessions")
	}
	s := remote.Sessions
	if signedIn == nil {
		signedIn = func(bool) {}
	}
	files, _ := fs.Sub(static, "static")
	assets := http.FileServerFS(files)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		if tok := r.URL.Query().Get("token"); tok != "" {
			signedIn(s.ValidToken(tok))
			if !s.ValidToken(tok) {
				http.Redirect(w, r, "/?signin=refused", http.StatusSeeOther)
				return
			}
			s.Issue(w, r)
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		http.ServeFileFS(w, r, files, "index.html")
	})
	for _, name := range []string{"app.js", "app.css", "icon.svg"} {
		mux.Handle("GET /"+name, assets)
	}
	mux.HandleFunc("GET /session", func(w http.ResponseWriter, r *http.Request) {
		id, ok := s.Check(r)
		if !ok {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "not signed in: give the API token", "code": "unauthorized"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"csrf": s.CSRF(id)})
	})
	mux.HandleFunc("POST /session", func(w http.ResponseWriter, r *http.Request) {
		ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
		if !strings.EqualFold(strings.TrimSpace(ct), "application/json") {
			writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"error": "send the token as JSON: {\"token\":\"...\"}", "code": "unsupported_media_type"})
			return
		}
		var req struct {
			Token string `json:"token"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "send the token as JSON: {\"token\":\"...\"}", "code": "invalid"})
			return
		}
		ok := s.ValidToken(strings.TrimSpace(req.Token))
		signedIn(ok)
		if !ok {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "that is not this server's API token (it is in DATA/api-token on the server; rewind console prints a sign-in link)", "code": "unauthorized"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"csrf": s.Issue(w, r)})
	})
	mux.HandleFunc("DELETE /session", func(w http.ResponseWriter, r *http.Request) {
		if id, ok := s.Check(r); ok {
			if err := s.Revoke(w, r, id); err != nil {
				writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "signed out until the server restarts, not after: " + err.Error(), "code": "internal"})
				return
			}
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return api.PageGuard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range security {
			w.Header().Set(k, v)
		}
		mux.ServeHTTP(w, r)
	}), remote)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
