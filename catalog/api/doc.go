// Package api carries the catalog over the daemon's local socket
// (DATA/rewind.sock): HTTP with JSON bodies, one POST /v1/METHOD per
// catalog.API method. Handler serves a catalog.API; Client is a
// catalog.API that calls one.
//
// Long operations (import, export) answer with a stream of JSON lines:
// {"progress":{"done":N,"total":N}} as they go, then {"result":...} or
// {"error":...}. An export to standard output answers with the raw bytes
// and reports a failure in the X-Rewind-Error trailer.
//
// Errors carry their class ("not_found", "conflict", ...) so the client
// can rebuild an error that matches the catalog's sentinels with
// errors.Is.
package api
