package nbd

import (
	"errors"
	"fmt"
	"io"
	"runtime/debug"
)

// allowedFlags are the command flags each command accepts; any other bit,
// or an unknown command, gets EINVAL.
func (s *session) allowedFlags(typ uint16) (uint16, bool) {
	switch typ {
	case CmdRead:
		if s.structured {
			return CmdFlagFUA | CmdFlagDF, true
		}
		return CmdFlagFUA, true
	case CmdWrite, CmdFlush, CmdTrim, CmdCache:
		return CmdFlagFUA, true
	case CmdWriteZeroes:
		return CmdFlagFUA | CmdFlagNoHole | CmdFlagFastZero, true
	case CmdBlockStatus:
		return CmdFlagFUA | CmdFlagReqOne, true
	}
	return 0, false
}

// check validates a request against the export before anything is read
// or allocated for it. The range arithmetic is done so that it cannot
// overflow (CVE-2025-47711, CVE-2025-47712).
func (s *session) check(r *request) *replyError {
	allowed, known := s.allowedFlags(r.typ)
	if !known {
		return rejectf(EINVAL, "unknown command %d", r.typ)
	}
	name := cmdName(r.typ)
	if r.flags&^allowed != 0 {
		return rejectf(EINVAL, "command flags %#x are not valid for %s", r.flags&^allowed, name)
	}
	switch r.typ {
	case CmdWrite, CmdTrim, CmdWriteZeroes:
		if s.exp.ReadOnly {
			return rejectf(EPERM, "%s on a read-only export", name)
		}
	case CmdFlush:
		if r.offset != 0 || r.length != 0 {
			return rejectf(EINVAL, "flush with nonzero offset or length")
		}
		return nil
	case CmdBlockStatus:
		if !s.metaAlloc {
			return rejectf(EINVAL, "block status without a metadata context: select %s with NBD_OPT_SET_META_CONTEXT for this export", MetaContextBaseAllocation)
		}
	}
	if r.length == 0 {
		return rejectf(EINVAL, "zero-length %s", name)
	}
	if (r.typ == CmdRead || r.typ == CmdWrite) && r.length > MaxPayload {
		return rejectf(EINVAL, "%s of %d bytes exceeds the maximum payload of %d", name, r.length, MaxPayload)
	}
	size := uint64(s.size)
	if r.offset > size || uint64(r.length) > size-r.offset {
		errno := EINVAL
		if r.typ == CmdWrite || r.typ == CmdWriteZeroes {
			errno = ENOSPC
		}
		return rejectf(errno, "%s of %d bytes at offset %d is beyond the end of the export (size %d)", name, r.length, r.offset, size)
	}
	return nil
}

// budgetFor is the memory a valid request holds until its reply is sent.
func (s *session) budgetFor(r *request) int64 {
	switch r.typ {
	case CmdRead:
		return int64(r.length) + replyHeadroom
	case CmdWrite:
		return int64(r.length)
	case CmdBlockStatus:
		if r.flags&CmdFlagReqOne == 0 {
			return chunkHeaderLen + 4 + 8*maxExtents
		}
	}
	return 0
}

// execute runs a request on the backend and builds its reply in j.segs.
func (t *transmission) execute(j *job) {
	if j.err == nil {
		j.err = t.run(j)
	}
	if j.err != nil {
		t.errorReply(j)
	}
}

// run performs a validated request; a panicking backend fails the request
// with EIO instead of taking the daemon down.
func (t *transmission) run(j *job) (rerr *replyError) {
	defer func() {
		if p := recover(); p != nil {
			t.c.log.Error("nbd: backend panicked", "cmd", cmdName(j.req.typ), "panic", p, "stack", string(debug.Stack()))
			j.segs = j.segs[:0]
			rerr = rejectf(EIO, "internal server error")
		}
	}()
	b := t.s.exp.Backend
	r := &j.req
	off, n := int64(r.offset), int64(r.length)
	var err error
	switch r.typ {
	case CmdRead:
		return t.read(j)
	case CmdBlockStatus:
		return t.blockStatus(j)
	case CmdWrite:
		err = writeFull(b, *j.buf, off)
	case CmdFlush:
		if !t.s.exp.ReadOnly {
			err = b.Flush()
		}
	case CmdTrim:
		err = b.Trim(off, n)
	case CmdCache:
		if c, ok := b.(Cacher); ok {
			err = c.Cache(off, n)
		}
	case CmdWriteZeroes:
		if r.flags&CmdFlagFastZero != 0 {
			if fz, ok := b.(FastZeroer); !ok || !fz.FastZero(off, n) {
				return rejectf(ENOTSUP, "zeroing is not faster than writing here")
			}
		}
		if nh, ok := b.(NoHoleZeroer); ok && r.flags&CmdFlagNoHole != 0 {
			err = nh.WriteZeroesNoHole(off, n)
		} else {
			err = b.WriteZeroes(off, n)
		}
	}
	if err == nil && r.flags&CmdFlagFUA != 0 && (r.typ == CmdWrite || r.typ == CmdTrim || r.typ == CmdWriteZeroes) {
		err = b.Flush()
	}
	if err != nil {
		return t.backendError(j, err)
	}
	t.simpleReply(j, 0)
	return nil
}

// backendError logs a backend failure (the first of each errno on a
// connection) and turns it into a reply error. The client sees the errno
// and the operation, not the server's details.
func (t *transmission) backendError(j *job, err error) *replyError {
	r := &j.req
	errno := ToErrno(err)
	if _, seen := t.logged.LoadOrStore(errno, true); !seen {
		t.c.log.Warn("nbd: backend error (later ones with this errno on this connection are not logged)",
			"cmd", cmdName(r.typ), "offset", r.offset, "length", r.length, "errno", uint32(errno), "err", err)
	}
	return rejectf(errno, "%s of %d bytes at offset %d failed: %s", cmdName(r.typ), r.length, r.offset, errno.Error())
}

func writeFull(b Backend, p []byte, off int64) error {
	n, err := b.WriteAt(p, off)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	return err
}

func readFull(b Backend, p []byte, off int64) error {
	n, err := b.ReadAt(p, off)
	if n == len(p) {
		return nil // io.ReaderAt may return io.EOF with a full read
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// simpleReply makes the reply a simple reply header.
func (t *transmission) simpleReply(j *job, errno Errno) {
	j.scratch = append(j.scratch[:0], make([]byte, simpleReplyLen)...)
	putSimpleReply(j.scratch, errno, j.req.cookie)
	j.segs = append(j.segs[:0], j.scratch)
}

// errorReply replaces the reply with an error: a structured error chunk
// with its message when structured replies are on (READ must never get a
// simple reply then), else a simple reply.
func (t *transmission) errorReply(j *job) {
	if !t.s.structured {
		t.simpleReply(j, j.err.errno)
		return
	}
	msg := truncString(j.err.msg)
	j.scratch = append(j.scratch[:0], make([]byte, chunkHeaderLen+6)...)
	putChunkHeader(j.scratch, ReplyFlagDone, ReplyTypeError, j.req.cookie, uint32(6+len(msg)))
	be.PutUint32(j.scratch[chunkHeaderLen:], uint32(j.err.errno))
	be.PutUint16(j.scratch[chunkHeaderLen+4:], uint16(len(msg)))
	j.scratch = append(j.scratch, msg...)
	j.segs = append(j.segs[:0], j.scratch)
}

// String makes requests readable in logs and test failures.
func (r request) String() string {
	return fmt.Sprintf("%s flags=%#x cookie=%#x offset=%d length=%d", cmdName(r.typ), r.flags, r.cookie, r.offset, r.length)
}
