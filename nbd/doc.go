// Package nbd is rewind's Network Block Device server: it serves a
// Backend (a view of a volume at an instant, or a writable clone) to NBD
// clients such as qemu, nbdcopy, nbdfuse and the kernel's nbd driver.
//
// # Protocol
//
// The server speaks the fixed newstyle handshake of the NBD protocol
// (NetworkBlockDevice/nbd doc/proto.md): NBD_OPT_GO, INFO (EXPORT,
// BLOCK_SIZE, NAME, DESCRIPTION), LIST, EXPORT_NAME (with and without
// NO_ZEROES), ABORT, STARTTLS, STRUCTURED_REPLY, LIST_META_CONTEXT and
// SET_META_CONTEXT with base:allocation. Other options get
// NBD_REP_ERR_UNSUP and the stream stays in sync. In transmission it
// serves READ (structured replies with OFFSET_DATA and OFFSET_HOLE chunks,
// one data chunk under DF, simple replies otherwise), WRITE, FLUSH, FUA,
// TRIM, WRITE_ZEROES (NO_HOLE, FAST_ZERO), CACHE, BLOCK_STATUS (with and
// without REQ_ONE) and DISC. Extended headers, RESIZE and the oldstyle
// handshake are not supported. wire.go holds the wire format; the rest is
// logic.
//
// Size constraints advertised: minimum block 1, preferred Export.BlockSize
// (a power of two, at least 512), maximum payload MaxPayload (32 MiB).
//
// The client side (hydration targets, pull imports) is nbd/client, built
// on the same wire.go.
//
// # TLS
//
// With Server.TLSConfig set, TLS is mandatory (FORCEDTLS): every option
// but STARTTLS and ABORT gets NBD_REP_ERR_TLS_REQD, and EXPORT_NAME before
// TLS closes the connection. Client certificates are checked by crypto/tls
// as the config says (tls.RequireAndVerifyClientCert). Go's crypto/tls has
// no external PSK, so only X.509 works: qemu's tls-creds-psk and
// nbdkit/libnbd PSK files cannot be used. A successful STARTTLS discards
// everything negotiated before it (CVE-2021-3716), and bytes pipelined
// behind STARTTLS close the connection.
//
// # Exports
//
// Resolver.Open runs only once a client names an export (GO, INFO,
// EXPORT_NAME) and, with TLS, after TLS is up; no backend work happens for
// unauthenticated clients. INFO opens the export to describe it and
// releases it at once. GO keeps it until the connection ends, then calls
// Export.Release. The server never flushes a backend on its own: FLUSH
// and FUA do, Shutdown does not. A Backend may also implement FastZeroer
// (FAST_ZERO succeeds where zeroing is cheap), NoHoleZeroer (NO_HOLE keeps
// zeroed ranges allocated) and Cacher (CACHE prefetches).
//
// # Concurrency
//
// Each connection has one reader goroutine, Server.Workers workers and one
// writer, in an errgroup tied to the connection. The reader validates each
// request before reading or allocating anything for it, reads WRITE
// payloads, and hands requests to the workers; workers call the Backend
// and build replies; the writer sends each reply (header and payload) in
// one write, batching replies that are ready together, in completion
// order (replies are out of order, as the protocol allows). Backend
// methods are therefore called concurrently, overlapping requests
// included. Buffers are pooled.
//
// One exception: a small READ of data a Backend holds in memory (it
// implements Resident) is served by the reader itself, a copy of a few
// microseconds where a worker would add a handoff and a wake-up. When
// the workers have nothing of the connection, the reader also writes the
// reply at once (writes to the connection are serialised by a mutex): a
// client that waits for each reply, as qemu at low queue depth and a
// booting guest do, is spared both handoffs, 30% of a lone 4 KiB read's
// time on a 2-core machine. Otherwise the reply joins the writer's next
// batch: fio's 4 KiB random reads at queue depth 32 went 18% faster
// (median of six interleaved runs) than when the workers served them.
// Replies of the workers are counted out before they are written, so a
// client that has seen them all finds the workers idle.
//
// A second: a WRITE of up to 64 KiB that arrives while the workers have
// nothing of the connection and no other request is buffered behind it
// is executed by the reader, and its reply written at once. A client
// that writes one request at a time (fio at queue depth 1, a database's
// log) took 4 KiB writes to a rewind clone about 1.4x as fast so. The
// reader reads nothing while it writes; a client whose next requests are
// already buffered finds them handed to the workers, side by side.
//
// FLUSH calls Backend.Flush, which must persist every write completed
// before it; since a write is replied only after WriteAt returned, this
// covers every write the client saw completed, on any connection sharing
// the Backend (Export.MultiConn advertises NBD_FLAG_CAN_MULTI_CONN). FUA
// is a Flush after the write.
//
// Shutdown stops accepting, closes negotiating connections, makes
// transmitting ones stop reading, lets the requests already read finish
// and be replied, and closes. A request whose WRITE payload was still
// arriving, or that was waiting for buffer memory, is dropped
// unanswered.
//
// # Limits
//
// Connections: Server.MaxConns in all, Server.MaxConnsPerClient (64) per
// IP address, negotiating ones included. A connection over either is
// closed on arrival, before the greeting, and counted
// (Metrics.ConnRefused); refusals for one client are logged at debug
// level only, so that a client cannot flood the log.
//
// Memory: the payload bytes held for requests (WRITE data read and not
// yet written to the backend, READ data and block status replies built
// and not yet sent) are reserved before anything is allocated for them
// and given back once the reply is written, against two budgets: the
// connection's (a quarter of Server.BufferMemory, at most 2 x
// MaxPayload) and the server's (Server.BufferMemory, 256 MiB by default,
// Server.BufferMemoryInUse and Metrics.BufferMemory tell what is held
// and how many wait). A reader waiting for either stops reading
// requests, and TCP pushes back on its client: the backpressure. Without
// the server's budget, every client that sends large READs and never
// reads the replies pinned a 32 MiB reply: 32 such clients held 1.1 GB,
// 512 would hold 17 GB.
// Waiters are served first come, first served, so a large request is not
// starved by small ones. A request larger than what is free (up to
// MaxPayload, even over the cap) proceeds once nothing else is held, so
// the budget never deadlocks on one request; the cap is passed by at most
// one request.
//
// The connection's share is the fairness: one client that stops reading
// its replies holds at most a quarter of the budget, and others are
// served beside it. Four such connections (or more, each holding less),
// from one client or several, can hold all of it; then every other
// client's reads and writes wait, until one of them reads or
// disconnects, or the reply timeout closes them (below). That is the
// price of the cap, paid in service instead of in the host's memory,
// for at most Server.ReplyTimeout. A share per client
// address would make one address not enough, but would also starve a
// hypervisor host whose many guests connect from one address. Streaming
// reads from the backend as the socket drains would hold no memory for a
// stalled client; it is not done.
//
// Reply timeout: a connection whose client takes not one byte of its
// replies for Server.ReplyTimeout (2 minutes by default) is closed, and
// every request it held gives back its memory. The wait is for progress,
// not for a whole reply: it starts when a write finds the socket full
// and starts again whenever bytes went out, so a client that keeps
// reading over a slow link is never cut off (over TLS, it must take 64
// KiB within the timeout, 546 bytes a second at the default). A write
// that finds room in the socket sets no deadline at all, and one that
// waits adds no system call; the deadline is the runtime poller's. The
// timeout only runs while a reply is being written: a connection with
// nothing to send may stay quiet for as long as it likes.
//
// Handshakes: the greeting (and, on a TLS server, everything up to the
// end of the TLS handshake) must be done within Server.HandshakeTimeout;
// after that, each option must arrive within it of the previous reply,
// and the options of one handshake may total Server.MaxHandshakeBytes
// (4 MiB). There is no cap on their number: nbdinfo --list asks about
// every export (NBD_OPT_INFO and NBD_OPT_LIST_META_CONTEXT for each), and
// libnbd 1.14 takes 200 ms an export, so a thousand volumes take minutes.
// The server cannot shorten that: libnbd sends the whole
// LIST_META_CONTEXT (no query) with MSG_MORE, and the client's kernel
// keeps it in its send queue until its persist timer fires (TCP_RTO_MIN,
// 200 ms). Nothing has reached the server meanwhile, so there is nothing
// to acknowledge early (TCP_QUICKACK) or to answer; nbdkit is listed
// just as slowly.
// Transmission has no idle timeout: hypervisors keep quiet connections
// for hours.
//
// Metrics are labelled by Export.MetricsName (rewind's volume), never by
// the name a client sent; a name that opens nothing is only counted
// (Metrics.UnknownExport).
//
// # Errors
//
// Protocol errors that leave the stream in sync get an error reply and the
// connection continues: unknown option (ERR_UNSUP), malformed option
// (ERR_INVALID), unknown command or flag (EINVAL), out of range (EINVAL
// for read, trim, cache and block status; ENOSPC for write and zeroes),
// write on a read-only export (EPERM; the payload is read and discarded),
// READ or WRITE over MaxPayload (EINVAL), zero length (EINVAL), FAST_ZERO
// when the Backend does not implement FastZeroer or says no (ENOTSUP).
// Errors that cannot be answered in sync close the connection: bad magic,
// unknown client flags, option data over 64 KiB, options over
// Server.MaxHandshakeBytes in all, any option but EXPORT_NAME without
// fixed newstyle, a refused EXPORT_NAME, a rejected WRITE payload over
// 2 x MaxPayload, the handshake deadline. Backend errors are mapped with ToErrno; the client sees the
// errno and the operation, the log gets the full error. Strings sent to
// clients are cut to 4096 bytes.
//
// # Raw I/O and the race detector
//
// Requests are read with read(2) and replies written with writev(2) as
// raw system calls (rawio.go), which skip the annotations syscall.Read
// and syscall.Write give the race detector. In race builds rawio.go puts
// them back (race_on.go, through runtime.RaceWriteRange and
// RaceReadRange): the detector sees the kernel write the bytes a read
// returned and read the bytes a writev took, at the point the call
// returns, in the goroutine that made it. It cannot see the rest: the
// request and reply buffers come from hugemem, outside the Go heap,
// which the detector ignores, so a use of one after it went back to its
// pool goes unseen by -race; make test builds with the hugemempoison tag,
// under which such a use faults (see blockstore/hugemem). Nor does it
// order a writer and a reader through the socket, as syscall's I/O
// annotations do; nothing here relies on that.
//
// # Known hazards
//
// A Backend call that never returns holds its worker and, at Shutdown,
// the connection, until Shutdown's context ends. A client that stops
// reading replies stops its own connection (the reader pushes back) and
// holds its share of Server.BufferMemory until the reply timeout closes
// it, or for as long as it stays connected when ReplyTimeout is negative
// (see Limits).
// Serving an export to a client on the same host that writes back into
// the same store (nbdfuse over an export of its own backing files)
// deadlocks like any loop-mounted filesystem.
package nbd
