// Package client is rewind's NBD client: it connects to an export named
// by an NBD URI (nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH,
// and nbds:// or nbds+unix:// for TLS) and reads and writes it as an
// io.ReaderAt and io.WriterAt. Hydration writes recovered disks through
// it into NBD targets, and pull imports read through it.
//
// # Why our own client
//
// The alternative was Debian's C libnbd through cgo. This client is built
// on the nbd package's wire code (nbd/wire.go) instead, because:
//   - the hydration copier sits in the daemon's hot path, and cgo there
//     costs a thread handoff per call and makes the daemon depend on a C
//     library at run time and at build time (static builds, CI images);
//   - server and client then share one definition of the wire format, so a
//     mistake in it shows up in both directions and in the tests of both;
//   - the reply parser is Go, so it is fuzzed (FuzzHandshake, FuzzReplies)
//     and run under the race detector with the rest;
//   - a target needs only a small part of libnbd: the fixed newstyle
//     handshake, structured replies, READ, WRITE, WRITE_ZEROES, TRIM and
//     FLUSH.
//
// # Protocol
//
// Fixed newstyle handshake; NBD_OPT_STARTTLS first for nbds:// (the
// connection fails rather than continue in the clear);
// NBD_OPT_STRUCTURED_REPLY (unless Options.SimpleReplies; a server may
// decline); NBD_OPT_GO asking for NBD_INFO_BLOCK_SIZE, and
// NBD_OPT_EXPORT_NAME when the server answers NBD_REP_ERR_UNSUP to GO (or
// is not fixed newstyle), as the spec tells clients to fall back. An
// error reply to GO ends the negotiation with NBD_OPT_ABORT.
//
// With structured replies, READ data arrives in OFFSET_DATA and
// OFFSET_HOLE chunks (holes are cleared in the caller's buffer, not sent)
// and a failed READ is an error chunk; every chunk must lie within its
// READ, and a READ that ends without error must have been covered whole,
// or the connection ends with ErrProtocol (overlapping chunks are not
// detected). With simple replies a failed READ carries no data, and a
// server that fails after sending the header hangs up. Extended headers,
// DF and CACHE are not implemented.
//
// BLOCK_STATUS: Options.MetaContexts are selected with
// NBD_OPT_SET_META_CONTEXT before GO (base:allocation, or QEMU's
// qemu:dirty-bitmap:NAME for incremental pulls); Info.MetaContext says
// which the server took. Conn.BlockStatus asks about one context and
// returns its extents from the requested offset, clipped to the request;
// descriptors for other contexts are dropped. A chunk is at most 1 MiB
// of descriptors.
//
// Requests respect the server's block size constraints: READ and WRITE
// are split at the maximum payload (the server's, at most 32 MiB, or 32
// MiB when it sent none), WRITE_ZEROES likewise, TRIM at 2 GiB; the
// pieces are all sent before the first reply is awaited. A request not
// aligned to the minimum block size fails with ErrUnaligned: there is no
// read-modify-write.
//
// # Concurrency
//
// A Conn is safe for concurrent use. A request's header and payload are
// written under one mutex (one writev), so requests never interleave on
// the wire; one reader goroutine reads replies and completes the request
// each names by its cookie, reading READ data straight into the caller's
// buffer. Any number of requests may be in flight; the caller bounds them.
// A failed write to the socket, a reply that breaks the protocol, or the
// server hanging up ends the connection: every request in flight and
// every later one fails with that error (ErrClosed or ErrProtocol). Close
// sends NBD_CMD_DISC when no request is being written, closes the
// socket, fails what is in flight with ErrClosed, and waits for the
// reader.
//
// # Errors
//
// Server errors are *RequestError, matching both the nbd.Errno and the
// syscall.Errno of the same meaning (errors.Is(err, syscall.ENOSPC)).
// Dial fails with one line naming the target and what to do for an
// unreachable server (ErrUnreachable), an unknown export
// (ErrUnknownExport), a read-only export under Options.Writable
// (ErrReadOnly), or a server that requires TLS (ErrTLSRequired).
//
// # Limits
//
// Requests have no deadline once connected: a server that stops answering
// holds its callers until Close. Without FLUSH on the server, Flush does
// nothing; without TRIM, Trim does nothing; without WRITE_ZEROES,
// WriteZeroes writes zeroes. FAST_ZERO is not sent. TLS is X.509 only (no
// PSK), like the server.
package client
