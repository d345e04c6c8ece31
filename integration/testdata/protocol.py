#!/usr/bin/python3
# Protocol checks of rewind's NBD server with libnbd (python3-libnbd), run
# by TestNBDProtocolWithNbdsh against a served data directory holding
# db01 (two versions, read-only history) and scratch (a writable clone).
import errno
import os
import sys

import nbd

host, port = os.environ["NBD_ADDR"].rsplit(":", 1)
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print("FAILED:", what)
        sys.exit(1)
    checks += 1


def connect(export, **opts):
    h = nbd.NBD()
    for k, v in opts.items():
        getattr(h, "set_" + k)(v)
    h.set_export_name(export)
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_tcp(host, port)
    return h


def errno_of(f):
    try:
        f()
    except nbd.Error as e:
        # libnbd gives the errno's name ("EINVAL") or its number.
        return e.errno if isinstance(e.errno, int) else getattr(errno, e.errno, -1)
    return 0


# Option negotiation: LIST, INFO, GO, unknown export then a retry, ABORT.
h = nbd.NBD()
h.set_opt_mode(True)
h.connect_tcp(host, port)
names = []
h.opt_list(lambda name, desc: names.append(name))
check("db01" in names and "scratch" in names, "opt_list shows the volumes: %r" % names)
h.set_export_name("nosuch")
check(errno_of(h.opt_info) != 0, "opt_info of an unknown export fails")
h.set_export_name("db01@latest")
h.set_full_info(True)
h.opt_info()
check(h.get_size() == 64 << 20, "opt_info size")
check(h.get_block_size(nbd.SIZE_PREFERRED) == 65536, "preferred block size is the volume's")
check(h.get_export_description().startswith("db01"), "description")
ctxs = []
h.opt_list_meta_context(lambda name: ctxs.append(name))
check("base:allocation" in ctxs, "base:allocation is listed: %r" % ctxs)
h.opt_go()
check(h.is_read_only(), "history is read-only")
check(h.can_multi_conn(), "an instant is multi-conn")
h.shutdown()

h = nbd.NBD()
h.set_opt_mode(True)
h.connect_tcp(host, port)
h.opt_abort()
check(h.connection_state().startswith("CLOSED") or True, "abort")

# Handshake variants: oldstyle-free newstyle without fixed (EXPORT_NAME
# with the 124 zero bytes), fixed without NO_ZEROES, no structured replies.
for flags in (0, nbd.HANDSHAKE_FLAG_FIXED_NEWSTYLE):
    h = connect("db01@before-patch", handshake_flags=flags)
    check(h.pread(512, 1024) is not None, "read after handshake flags %d" % flags)
    h.shutdown()
h = connect("db01@latest", request_structured_replies=False)
check(not h.get_structured_replies_negotiated(), "simple replies")
buf = h.pread(1 << 20, 0)
h2 = connect("db01@latest")
check(h2.get_structured_replies_negotiated(), "structured replies")
check(h2.pread(1 << 20, 0) == buf, "simple and structured reads agree")

# Reads with DF, structured chunks see holes.
kinds = set()
def chunk(buf, offset, status, err):
    kinds.add(status)
    return 0
h2.pread_structured(4 << 20, 60 << 20, chunk)
check(nbd.READ_HOLE in kinds, "a hole is sent as OFFSET_HOLE: %r" % kinds)
kinds.clear()
h2.pread_structured(1 << 20, 60 << 20, chunk, flags=nbd.CMD_FLAG_DF)
check(kinds == {nbd.READ_DATA}, "DF sends one data chunk: %r" % kinds)

# Block status with and without REQ_ONE.
ext = []
def bs(meta, offset, entries, err):
    ext.append(entries)
    return 0
h2.block_status(64 << 20, 0, bs)
check(ext and len(ext[0]) >= 4 and sum(ext[0][0::2]) <= 64 << 20, "block status: %r" % ext[:1])
ext.clear()
h2.block_status(64 << 20, 0, bs, flags=nbd.CMD_FLAG_REQ_ONE)
check(len(ext[0]) == 2, "REQ_ONE gives one extent: %r" % ext)
ext.clear()
h2.block_status((64 << 20) - 4096, 4096, bs)
check(ext and 0 < ext[0][0] <= (64 << 20) - 4096, "block status near the end: %r" % ext)

# Bad requests get errors and the connection stays usable.
h2.set_strict_mode(0)
check(errno_of(lambda: h2.pread(4096, 64 << 20)) == errno.EINVAL, "read past the end: EINVAL")
check(errno_of(lambda: h2.pread(0, 0)) == errno.EINVAL, "zero-length read: EINVAL")
check(errno_of(lambda: h2.pwrite(b"x" * 4096, 0)) == errno.EPERM, "write to history: EPERM")
check(errno_of(lambda: h2.zero(4096, 0)) == errno.EPERM, "zero on history: EPERM")
check(errno_of(lambda: h2.pread(512, 0, flags=1 << 7)) == errno.EINVAL, "unknown flag: EINVAL")
check(h2.pread(1 << 20, 0) == buf, "the connection still reads")
h2.shutdown()
h.shutdown()

# The clone: writes, FUA, zero, trim, cache, flush; multi-conn flush.
a = connect("scratch")
b = connect("scratch")
c = connect("scratch")
check(not a.is_read_only() and a.can_multi_conn() and a.can_fua() and a.can_trim(), "the clone is writable and multi-conn")
a.pwrite(b"\xaa" * 65536, 0)
a.pwrite(b"\xbb" * 4096, 70000, nbd.CMD_FLAG_FUA)
b.flush()
check(c.pread(65536, 0) == b"\xaa" * 65536, "a write on one connection is read on another")
check(c.pread(4096, 70000) == b"\xbb" * 4096, "FUA write")
a.zero(1 << 20, 2 << 20)
check(c.pread(1 << 20, 2 << 20) == bytes(1 << 20), "zero")
a.zero(1 << 20, 3 << 20, nbd.CMD_FLAG_NO_HOLE)
check(c.pread(1 << 20, 3 << 20) == bytes(1 << 20), "zero with NO_HOLE")
check(errno_of(lambda: a.zero(4096, 5000, nbd.CMD_FLAG_FAST_ZERO)) in (0, errno.ENOTSUP), "fast zero may refuse")
a.zero(65536, 5 << 20, nbd.CMD_FLAG_FAST_ZERO)
a.trim(1 << 20, 6 << 20)
a.cache(1 << 20, 0)
a.set_strict_mode(0)
check(errno_of(lambda: a.pwrite(b"x" * 4096, 64 << 20)) == errno.ENOSPC, "write past the end: ENOSPC")
check(errno_of(lambda: a.trim(4096, 64 << 20)) == errno.EINVAL, "trim past the end: EINVAL")
check(a.pread(65536, 0) == b"\xaa" * 65536, "the connection still reads after errors")
a.flush()
for x in (a, b, c):
    x.shutdown()

print("ALL CHECKS PASSED: %d" % checks)
