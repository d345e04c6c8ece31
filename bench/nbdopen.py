#!/usr/bin/env python3
"""Time opening NBD exports, for bench/scale.sh.

    nbdopen.py HOST PORT COUNT EXPORT...

For each EXPORT in turn, COUNT times: connect, fixed-newstyle handshake,
NBD_OPT_GO, one 4 KiB NBD_CMD_READ at offset 0, NBD_CMD_DISC, close.
Prints one line per EXPORT: the export name, then COUNT pairs
"OPEN/READ" in milliseconds, where OPEN runs from connect() to the GO
reply's ACK and READ from the ACK to the read's reply. Exits 1 with a
one-line message when the server refuses an export or breaks the
protocol.
"""
import socket
import struct
import sys
import time

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
OPT_GO = 7
REP_ACK = 1
REP_ERR = 1 << 31
FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
CMD_READ = 0
CMD_DISC = 2


class Refused(Exception):
    pass


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        part = s.recv(n - len(buf))
        if not part:
            raise Refused("the server closed the connection")
        buf += part
    return bytes(buf)


def open_once(host, port, name):
    t0 = time.perf_counter()
    s = socket.create_connection((host, port))
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hello = recv_exact(s, 18)
        if hello[:8] != NBDMAGIC or struct.unpack(">Q", hello[8:16])[0] != IHAVEOPT:
            raise Refused("not a fixed-newstyle NBD server")
        (sflags,) = struct.unpack(">H", hello[16:18])
        cflags = FLAG_FIXED_NEWSTYLE | (sflags & FLAG_NO_ZEROES)
        body = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        s.sendall(struct.pack(">IQII", cflags, IHAVEOPT, OPT_GO, len(body)) + body)
        while True:
            magic, opt, rtype, length = struct.unpack(">QIII", recv_exact(s, 20))
            data = recv_exact(s, length)
            if magic != REPLY_MAGIC or opt != OPT_GO:
                raise Refused("bad option reply")
            if rtype == REP_ACK:
                break
            if rtype & REP_ERR:
                raise Refused("export %s refused: %s" % (name.decode(), data.decode(errors="replace") or hex(rtype)))
        t1 = time.perf_counter()
        s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, 1, 0, 4096))
        magic, err, handle = struct.unpack(">IIQ", recv_exact(s, 16))
        if magic != SIMPLE_REPLY_MAGIC or handle != 1:
            raise Refused("bad read reply")
        if err:
            raise Refused("export %s: read error %d" % (name.decode(), err))
        recv_exact(s, 4096)
        t2 = time.perf_counter()
        s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_DISC, 2, 0, 0))
    finally:
        s.close()
    return (t1 - t0) * 1000, (t2 - t1) * 1000


def main():
    if len(sys.argv) < 5:
        sys.exit("usage: nbdopen.py HOST PORT COUNT EXPORT...")
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    try:
        for name in sys.argv[4:]:
            runs = [open_once(host, port, name.encode()) for _ in range(count)]
            print(name, " ".join("%.3f/%.3f" % r for r in runs))
    except (Refused, OSError) as e:
        sys.exit("nbdopen: %s" % e)


if __name__ == "__main__":
    main()
