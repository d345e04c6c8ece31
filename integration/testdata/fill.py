#!/usr/bin/python3
# Fills a writable export with random data, 1 MiB at a time, each write
# followed by a flush, until a write or flush fails. Run by TestFullDisk.
# It writes what it wrote to $EXPECTED at the same offsets, and prints
#   FLUSHED <bytes>   how far every write was flushed
#   ERRNO <name>      why it stopped ("none": it reached the end)
#   READ OK           reads still worked after the failure
import errno
import os

import nbd

host, port = os.environ["NBD_ADDR"].rsplit(":", 1)
h = nbd.NBD()
h.set_export_name(os.environ["EXPORT"])
h.connect_tcp(host, port)
size = h.get_size()
chunk = 1 << 20
flushed = 0
why = "none"
with open(os.environ["EXPECTED"], "wb") as expected:
    while flushed + chunk <= size:
        buf = os.urandom(chunk)
        try:
            h.pwrite(buf, flushed)
            h.flush()
        except nbd.Error as e:
            why = errno.errorcode.get(e.errno, str(e.errno))
            break
        expected.write(buf)
        flushed += chunk
print("FLUSHED", flushed)
print("ERRNO", why)
if flushed > 0:
    with open(os.environ["EXPECTED"], "rb") as expected:
        first = expected.read(chunk)
    if h.pread(chunk, 0) == first:
        print("READ OK")
h.shutdown()
