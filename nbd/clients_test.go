package nbd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// These tests drive the server with the real clients from Debian. A
// missing client fails the test with the package to install; it is never
// skipped.

// tool returns the path of a client program or fails naming its package.
func tool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: install the Debian package %s (apt-get install %s)", name, pkg, pkg)
	}
	return p
}

// run runs a client, failing the test if it does not exit with want.
func run(t *testing.T, want int, env []string, prog string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", prog, err)
	}
	if code != want {
		t.Fatalf("%s %q exited %d, want %d:\n%s", filepath.Base(prog), args, code, want, out.String())
	}
	return out.String()
}

func (h *harness) uri(export string) string { return "nbd://" + h.addr + "/" + export }

func TestNbdinfo(t *testing.T) {
	nbdinfo := tool(t, "nbdinfo", "libnbd-bin")
	h := newHarness(t)
	sparseDisk(h)

	out := run(t, 0, nil, nbdinfo, "--list", "nbd://"+h.addr)
	for _, want := range []string{`export="disk"`, `export="ro"`, `export="single"`, "a test disk", "can_multi_conn: true"} {
		if !strings.Contains(out, want) {
			t.Fatalf("nbdinfo --list lacks %q:\n%s", want, out)
		}
	}
	out = run(t, 0, nil, nbdinfo, "--map", h.uri("disk"))
	fields := strings.Fields(out)
	want := strings.Fields(fmt.Sprintf(`0 65536 0 data
		65536 983040 3 hole,zero
		1048576 4096 0 data
		1052672 %d 3 hole,zero`, testSize-1052672))
	if strings.Join(fields, " ") != strings.Join(want, " ") {
		t.Fatalf("nbdinfo --map:\n%s", out)
	}
	run(t, 0, nil, nbdinfo, "--can", "multi-conn", h.uri("disk"))
	run(t, 2, nil, nbdinfo, "--can", "multi-conn", h.uri("single"))
	run(t, 0, nil, nbdinfo, "--is", "read-only", h.uri("ro"))
	run(t, 0, nil, nbdinfo, "--can", "fast-zero", h.uri("disk"))
	run(t, 1, nil, nbdinfo, h.uri("nope")) // unknown export
}

func TestTLSClients(t *testing.T) {
	nbdinfo := tool(t, "nbdinfo", "libnbd-bin")
	qemuImg := tool(t, "qemu-img", "qemu-utils")
	h, pki := newTLSHarness(t)
	host, port, _ := net.SplitHostPort(h.addr)
	out := run(t, 0, nil, qemuImg, "info", "--object", "tls-creds-x509,id=tls0,endpoint=client,dir="+pki.Dir,
		"--image-opts", "driver=nbd,server.type=inet,server.host="+host+",server.port="+port+
			",export=disk,tls-creds=tls0,tls-hostname=localhost")
	if !strings.Contains(out, fmt.Sprintf("(%d bytes)", testSize)) {
		t.Fatalf("qemu-img info over TLS:\n%s", out)
	}
	out = run(t, 0, nil, nbdinfo, "nbds://"+h.addr+"/disk?tls-certificates="+pki.Dir)
	if !strings.Contains(out, fmt.Sprintf("export-size: %d", testSize)) {
		t.Fatalf("nbdinfo over TLS:\n%s", out)
	}
	out = run(t, 1, nil, nbdinfo, h.uri("disk")) // plaintext: TLS required
	if !strings.Contains(out, "TLS") && !strings.Contains(out, "not supported") {
		t.Fatalf("plaintext nbdinfo:\n%s", out)
	}
}

func TestQemuIO(t *testing.T) {
	qemuIO := tool(t, "qemu-io", "qemu-utils")
	h := newHarness(t)
	h.mem.Fill(pattern(6<<20, 1), 0)
	out := run(t, 0, nil, qemuIO, "-f", "raw",
		"-c", "write -P 0x55 0 1M", "-c", "read -P 0x55 0 1M",
		"-c", "write -z 1M 1M", "-c", "write -z -u 2M 1M", "-c", "write -z -n 3M 1M",
		"-c", "discard 4M 1M", "-c", "write -f 5M 4k", "-c", "read -P 0 1M 3M",
		"-c", "flush", "-c", "map", h.uri("disk"))
	if strings.Contains(out, "fail") || strings.Contains(out, "rror") {
		t.Fatalf("qemu-io:\n%s", out)
	}
	got := h.mem.Bytes()
	if !bytes.Equal(got[:1<<20], bytes.Repeat([]byte{0x55}, 1<<20)) ||
		!bytes.Equal(got[1<<20:4<<20], make([]byte, 3<<20)) ||
		!bytes.Equal(got[5<<20:5<<20+4096], bytes.Repeat([]byte{0xcd}, 4096)) {
		t.Fatalf("qemu-io left the wrong data:\n%s", out)
	}
	if h.mem.Dirty() != 0 {
		t.Fatal("qemu-io's flush did not reach the backend")
	}
}

// nbdcopy writes with several connections (multi-conn), zeroes holes in
// 128 MiB requests, flushes every connection, and reads back with block
// status.
func TestNbdcopy(t *testing.T) {
	nbdcopy := tool(t, "nbdcopy", "libnbd-bin")
	h := newHarness(t)
	h.mem.Fill(pattern(testSize, 1), 0) // to be overwritten, holes included
	src := make([]byte, testSize)
	copy(src[1<<20:], pattern(3<<20, 2))
	copy(src[9<<20:], pattern(4096, 3))
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.raw"), filepath.Join(dir, "out.raw")
	if err := os.WriteFile(in, src, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, 0, nil, nbdcopy, "--flush", in, h.uri("disk"))
	if !bytes.Equal(h.mem.Bytes(), src) {
		t.Fatal("export differs from the copied file")
	}
	if h.mem.Dirty() != 0 {
		t.Fatal("nbdcopy --flush left unflushed writes")
	}
	run(t, 0, nil, nbdcopy, h.uri("disk"), out)
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, src) {
		t.Fatalf("copy back differs (%v)", err)
	}
}

func TestQemuImgMap(t *testing.T) {
	qemuImg := tool(t, "qemu-img", "qemu-utils")
	h := newHarness(t)
	sparseDisk(h)
	out := run(t, 0, nil, qemuImg, "map", "-f", "raw", "--output=json", h.uri("disk"))
	var got []struct {
		Start, Length int64
		Zero, Data    bool
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	want := fmt.Sprintf("[{0 65536 false true} {65536 983040 true false} {1048576 4096 false true} {1052672 %d true false}]", testSize-1052672)
	if fmt.Sprint(got) != want {
		t.Fatalf("qemu-img map: %v, want %s", got, want)
	}
}

// nbdshScript negotiates options, sends bad requests with strict mode
// off, and checks block status with and without REQ_ONE.
const nbdshScript = `
import errno
base, size = %q, %d

def expect_error(f, err):
    try:
        f()
    except nbd.Error as e:
        assert e.errnum == err, (e.string, e.errnum)
        return
    raise AssertionError("no error")

h = nbd.NBD()
h.set_opt_mode(True)
h.connect_uri(base)
names = []
h.opt_list(lambda name, desc: names.append((name, desc)))
assert sorted(names) == [("disk", "a test disk"), ("ro", "read-only"), ("single", "")], names
ctxs = []
h.opt_list_meta_context(lambda name: ctxs.append(name))
assert ctxs == ["base:allocation"], ctxs
h.set_export_name("nope")
expect_error(h.opt_info, errno.ENOENT)
h.set_export_name("disk")
h.set_full_info(True)
h.opt_info()
assert h.get_size() == size
assert h.get_canonical_export_name() == "disk"
assert h.get_export_description() == "a test disk"
assert h.get_block_size(nbd.SIZE_PREFERRED) == 65536
assert h.get_block_size(nbd.SIZE_MAXIMUM) == 32 * 1024 * 1024
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.opt_go()
assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
assert h.can_multi_conn() and h.can_fast_zero() and h.can_df() and h.can_cache()

# block status without and with REQ_ONE
seen = []
def extent(ctx, off, entries, err):
    assert ctx == nbd.CONTEXT_BASE_ALLOCATION
    seen.append(list(entries))
h.block_status(2 * 1024 * 1024, 0, extent)
assert seen[-1] == [65536, 0, 983040, 3, 4096, 0, 1044480, 3], seen
h.block_status(2 * 1024 * 1024, 0, extent, nbd.CMD_FLAG_REQ_ONE)
assert seen[-1] == [65536, 0], seen
h.block_status(512, 100000, extent, nbd.CMD_FLAG_REQ_ONE)
assert seen[-1] == [512, 3], seen

# structured reads: holes with and without DF
chunks = []
def chunk(buf, off, status, err):
    chunks.append((off, len(buf), status))
h.pread_structured(2 * 1024 * 1024, 0, chunk)
assert [c[2] for c in chunks] == [nbd.READ_DATA, nbd.READ_HOLE, nbd.READ_DATA, nbd.READ_HOLE], chunks
chunks.clear()
h.pread_structured(2 * 1024 * 1024, 0, chunk, nbd.CMD_FLAG_DF)
assert chunks == [(0, 2 * 1024 * 1024, nbd.READ_DATA)], chunks

# writes, zeroes, trim, cache, flush
h.pwrite(b"\x77" * 4096, 8 * 1024 * 1024, nbd.CMD_FLAG_FUA)
assert h.pread(4096, 8 * 1024 * 1024) == b"\x77" * 4096
h.zero(4096, 8 * 1024 * 1024, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)
assert h.pread(4096, 8 * 1024 * 1024) == bytes(4096)
h.trim(1024 * 1024, 9 * 1024 * 1024)
h.cache(1024 * 1024, 0)
h.flush()

# bad requests, with the client's own checks off: the server answers
# each with an error and stays connected
h.set_strict_mode(0)
expect_error(lambda: h.pread(512, size), errno.EINVAL)
expect_error(lambda: h.pread(512, size - 256), errno.EINVAL)
expect_error(lambda: h.pread(0, 0), errno.EINVAL)
expect_error(lambda: h.pread(512, 0, 1 << 7), errno.EINVAL)
expect_error(lambda: h.pwrite(b"x" * 512, size), errno.ENOSPC)
expect_error(lambda: h.zero(512, size), errno.ENOSPC)
expect_error(lambda: h.trim(512, size), errno.EINVAL)
expect_error(lambda: h.block_status(1024, size, extent), errno.EINVAL)
assert len(h.pread(512, 0)) == 512
h.shutdown()

# simple replies, and the old handshake without fixed newstyle
for flags in (nbd.HANDSHAKE_FLAG_FIXED_NEWSTYLE, 0):
    g = nbd.NBD()
    g.set_handshake_flags(flags)
    g.set_request_structured_replies(False)
    g.connect_uri(base + "/disk")
    assert not g.can_df() and g.get_size() == size
    assert len(g.pread(65536, 0)) == 65536
    g.shutdown()

# multi-conn: write on one handle, flush on another, read on a third
a, b, c = nbd.NBD(), nbd.NBD(), nbd.NBD()
for x in (a, b, c):
    x.connect_uri(base + "/disk")
a.pwrite(b"\x42" * 65536, 12 * 1024 * 1024)
b.flush()
assert c.pread(65536, 12 * 1024 * 1024) == b"\x42" * 65536
print("nbdsh script passed")
`

func TestNbdsh(t *testing.T) {
	nbdsh := tool(t, "nbdsh", "python3-libnbd")
	h := newHarness(t)
	sparseDisk(h)
	script := filepath.Join(t.TempDir(), "check.py")
	if err := os.WriteFile(script, []byte(fmt.Sprintf(nbdshScript, "nbd://"+h.addr, testSize)), 0o644); err != nil {
		t.Fatal(err)
	}
	// nbdsh runs python3 -m nbd: the system python has the module.
	env := []string{"PATH=/usr/bin:" + os.Getenv("PATH")}
	out := run(t, 0, env, nbdsh, "-n", "-c", fmt.Sprintf("exec(open(%q).read())", script))
	if !strings.Contains(out, "nbdsh script passed") {
		t.Fatalf("nbdsh:\n%s", out)
	}
	if h.mem.Dirty() != 0 {
		t.Fatal("flush from nbdsh did not reach the backend")
	}
}
