// Package console serves rewind's web console: one page, embedded in the
// binary (static/), that calls the REST API of package api from the
// browser. The page holds no data of its own; everything it shows comes
// from /v1 calls made with the session cookie.
//
// # Access
//
// The page and its files are served behind api.PageGuard only (this
// server's Host names, no cross-site request), since they hold nothing.
// Signing in takes the API token, either typed into the page (POST
// /session, JSON) or in the link /?token=TOKEN that `rewind console`
// prints; either sets the session cookie (api.Sessions: HttpOnly,
// SameSite=Strict, Secure over TLS, 12 hours) and the link redirects to
// / at once, so the token leaves the address bar and no Referer carries
// it (Referrer-Policy: no-referrer besides). GET /session gives the page
// its CSRF token, which every state-changing /v1 call sends in
// X-CSRF-Token; api.Guard checks both. DELETE /session signs out.
//
// Every answer carries a Content-Security-Policy that allows only this
// origin's scripts, styles and images (the page works with no network
// beyond this server) and no framing.
//
// # Live updates
//
// The page polls, and only while something moves: the recoveries view
// every second while a recovery copies, nothing while all are idle or
// the tab is hidden.
package console
