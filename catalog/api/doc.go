// Package api is the daemon's REST API under /v1: one route table, served
// on the local socket (DATA/rewind.sock) and, behind Guard, on --http.
// Routes (server.go) are the catalog's routes, GET /v1/server and
// GET /v1/openapi.json; the daemon (cmd/rewind) appends its own
// (recoveries, protections, mounts, verify/*) as Route values, and Serve
// answers the whole table. Client is a catalog.API that calls the routes
// on the socket, and Call/CallWithFile reach the daemon's own; the CLI
// has no other way in, so there is one implementation.
//
// Answers: GET 200, a creation 201 with Location, DELETE 204 without a
// body (cancel and unprotect answer 200 with the status), actions 200;
// helpers OK, Created, NoContent and Decode build handlers that keep to
// this. Long operations (verify, imports, exports, replications) answer
// with a stream of JSON lines: {"progress":{"done":N,"total":N}} as they
// go, then {"result":...} or {"error":...}. An export to standard output
// answers with the raw bytes and reports a failure in the X-Rewind-Error
// trailer.
//
// Errors are {"error": one line, "code": class}, the class the stable
// word of catalog.Class (invalid 400, not_found 404, exists, conflict and
// busy 409, forbidden 403, no_space 507, internal 500), so the client
// rebuilds an error that matches the catalog's sentinels with errors.Is.
// A path no route has is 404 not_found, a method the path does not take
// 405 invalid, in the same shape.
//
// The OpenAPI 3 document is openapi.json, embedded. CheckOpenAPI holds it
// to a route table: the same (method, path) pairs, and schemas naming the
// JSON fields of each route's Body and Answer types (nested structs
// too). cmd/rewind's test runs it on the daemon's whole table. Known
// limit: it compares property names, not their types; streamed and raw
// answers are described by hand.
//
// # Access (socket.go)
//
// The daemon runs as root, so the socket serves root and the owner of the
// data directory only. ListenSocket binds it in a fresh 0700 directory
// inside DATA, sets mode 0600 and (when root) the owner of DATA there,
// and renames it onto DATA/rewind.sock: at no moment can another user
// reach it, and no process-wide umask is touched. Since DATA's owner may
// swap DATA's entries meanwhile, every step after mkdir goes through the
// private directory's descriptor (opened without following links and
// checked to be the daemon's; bound through /proc/self/fd). Every connection's
// SO_PEERCRED uid is read at accept; a call from anyone else gets 403 with
// code "forbidden" and reaches no handler. Handlers find the caller's
// uid with PeerUID (rewind mount checks that the caller owns the mount
// point). Dial reports a socket this user may not connect to as
// ErrForbidden, so that the CLI does not open the store in-process
// instead.
//
// The daemon never opens a path for a caller: import and export over the
// API need the source or destination passed open (SCM_RIGHTS), and a call
// that only names a path is refused; export to "-" streams the bytes. A
// client that passes a file dials a connection of its own, not reused,
// and sends one marker byte (0, which no HTTP request starts with) with
// the descriptor attached, then its request. The server's connection
// wrapper does its first read with recvmsg (Go's ReadMsgUnix, with
// MSG_CMSG_CLOEXEC), keeps the descriptors and strips the marker; a
// handler takes one from the connection's context, and the rest are
// closed with the connection (descriptors sent later are dropped by the
// kernel, since later reads take no control messages). This keeps
// net/http on both sides, ties a descriptor to exactly one request, and
// leaves every other call unchanged. Over TCP no descriptor can come, so
// there import and export by path are refused too. An import may instead
// send the image as the body (Content-Type application/octet-stream, the
// volume and options in the query).
//
// A replication to a directory is the one call that writes where a caller
// names: the daemon takes it from root, or from a caller that owns the
// directory (or the nearest one above it that is there), on the local
// socket only (checkTargetOwner). Known limit: as for rewind mount, the
// owner is checked before the daemon follows the path.
//
// # Access on --http (guard.go, session.go)
//
// Guard lets a request through to the routes only with the bearer token,
// or with a console session (Sessions: a cookie signed with a key derived
// from the token, HttpOnly and SameSite=Strict) together with the
// session's CSRF token in X-CSRF-Token on every call but GET and HEAD;
// before either, PageGuard refuses a Host that is none of the server's
// names (DNS rebinding) and any cross-site request. Sessions keep no
// state but the revocations of signing out (in memory, until the session
// would have expired), so a restart keeps sessions and a new token ends
// them all. Package console serves the pages behind PageGuard alone.
package api
