package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/nbd/client"
)

// daemon runs a server that forks into the background once it listens
// (qemu-nbd --fork, nbdkit without -f) and kills it when the test ends.
func daemon(t testing.TB, pidFile string, name string, args ...string) {
	t.Helper()
	// Output goes to a file: the daemon inherits it, and a pipe would
	// stay open until the daemon's stderr closes.
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, b)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// SIGKILL: qemu-nbd takes over a second to exit on SIGTERM, and
		// nothing of it is needed any more.
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Errorf("kill %s (%d): %v", name, pid, err)
			return
		}
		// Let it go before its files are removed.
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if !alive(pid) {
				return
			}
		}
		t.Errorf("%s (%d) outlived SIGKILL", name, pid)
	})
}

// alive reports whether pid runs: it exists and is not a zombie waiting
// for init to reap it.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...; comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// qemuNBD serves file as the export "disk" on a unix socket; extra
// arguments (-r) are passed on. It returns the socket path.
func qemuNBD(t testing.TB, file string, extra ...string) string {
	dir := t.TempDir()
	sock, pid := filepath.Join(dir, "q.sock"), filepath.Join(dir, "q.pid")
	args := append([]string{"--fork", "--persistent", "--pid-file=" + pid, "-k", sock, "-x", "disk", "-f", "raw"}, extra...)
	daemon(t, pid, "qemu-nbd", append(args, file)...)
	return sock
}

// writeMix writes 16 regions of 256 KiB from 16 goroutines, zeroes the
// first 4 KiB of each and flushes; it returns the expected image, base
// with those changes.
func writeMix(t *testing.T, c *client.Conn, base []byte) []byte {
	t.Helper()
	want := bytes.Clone(base)
	const region = 256 << 10
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		off := int64(g)*region + region
		data := pattern(byte(g+1), region)
		copy(want[off:], data)
		clear(want[off : off+4096])
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.WriteAt(data, off); err != nil {
				errs <- err
				return
			}
			errs <- c.WriteZeroes(off, 4096, false)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	return want
}

func TestQemuNBD(t *testing.T) {
	file := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(file, bytes.Repeat([]byte{0xee}, 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := qemuNBD(t, file)
	uri := "nbd+unix:///disk?socket=" + sock
	c, err := client.Dial(context.Background(), uri, client.Options{Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	info := c.Info()
	if c.Size() != 8<<20 || !info.CanFlush() || !info.CanWriteZeroes() || !info.CanTrim() || !c.StructuredReplies() {
		t.Fatalf("qemu-nbd export: size %d flags %#x", c.Size(), info.Flags())
	}
	want := writeMix(t, c, bytes.Repeat([]byte{0xee}, 8<<20))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the file qemu-nbd serves does not hold what the client wrote")
	}

	_, err = client.Dial(context.Background(), "nbd+unix:///nope?socket="+sock, client.Options{})
	if !errors.Is(err, client.ErrUnknownExport) {
		t.Fatalf("unknown export on qemu-nbd: %v", err)
	}
	oneLine(t, err, `"nope"`)
}

func TestQemuNBDReadOnly(t *testing.T) {
	file := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(file, bytes.Repeat([]byte("ro"), 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	uri := "nbd+unix:///disk?socket=" + qemuNBD(t, file, "-r")
	_, err := client.Dial(context.Background(), uri, client.Options{Writable: true})
	if !errors.Is(err, client.ErrReadOnly) {
		t.Fatalf("Writable dial of qemu-nbd -r: %v", err)
	}
	oneLine(t, err, uri[:len("nbd+unix:///disk")])
	c := dial(t, uri, client.Options{})
	if _, err := c.WriteAt([]byte("xx"), 0); !errors.Is(err, client.ErrReadOnly) {
		t.Fatalf("write to qemu-nbd -r: %v", err)
	}
	got := make([]byte, 4)
	if _, err := c.ReadAt(got, 2); err != nil || string(got) != "roro" {
		t.Fatalf("read %q, %v", got, err)
	}
}

// nbdkit's memory plugin; the result is checked with nbdcopy (libnbd), an
// independent client.
func TestNBDKit(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "k.sock")
	activated(t, sock, "nbdkit", "-f", "memory", "16M")
	uri := "nbd+unix:///?socket=" + sock
	c := dial(t, uri, client.Options{Writable: true})
	if c.Size() != 16<<20 || !c.Info().CanMultiConn() || !c.StructuredReplies() {
		t.Fatalf("nbdkit memory: size %d flags %#x", c.Size(), c.Info().Flags())
	}
	want := writeMix(t, c, make([]byte, 16<<20))
	if err := c.Trim(15<<20, 1<<20); err != nil { // untouched, zero either way
		t.Fatal(err)
	}
	got := make([]byte, c.Size())
	if _, err := c.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back differs (%v)", err)
	}
	out := filepath.Join(dir, "copy.raw")
	if b, err := exec.Command("nbdcopy", uri, out).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy: %v\n%s", err, b)
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("nbdcopy reads other bytes than the client wrote (%v)", err)
	}
}

// activated runs a server in the foreground with a listening unix socket
// at sock handed over by socket activation (LISTEN_FDS), so it is ready
// before it starts, and kills it when the test ends.
func activated(t *testing.T, sock string, name string, args ...string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	f, err := ln.File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// LISTEN_PID must be the server's pid: the shell's, kept by exec.
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"`, "sh", name)
	cmd.Args = append(cmd.Args, args...)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
}

// nbdkit advertising block size constraints, and failing requests that
// break them (blocksize-policy), without WRITE_ZEROES (nozero).
func TestNBDKitBlockSizes(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "k.sock")
	activated(t, sock, "nbdkit", "-f", "--filter=blocksize-policy", "--filter=nozero", "memory", "16M",
		"blocksize-minimum=512", "blocksize-maximum=65536", "blocksize-error-policy=error")
	c := dial(t, "nbd+unix:///?socket="+sock, client.Options{Writable: true})
	info := c.Info()
	if s := info.BlockSizes(); s.Min != 512 || s.MaxPayload != 65536 || info.MaxPayload() != 65536 || info.CanWriteZeroes() {
		t.Fatalf("sizes %+v, flags %#x", s, info.Flags())
	}
	data := pattern(9, 1<<20+512)
	if _, err := c.WriteAt(data, 512); err != nil {
		t.Fatalf("a write split at the maximum payload: %v", err)
	}
	if err := c.WriteZeroes(4096, 256<<10, false); err != nil {
		t.Fatalf("zeroes written as data: %v", err)
	}
	clear(data[4096-512 : 4096-512+256<<10])
	got := make([]byte, len(data))
	if _, err := c.ReadAt(got, 512); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back differs (%v)", err)
	}
	for _, r := range []struct{ off, n int64 }{{0, 100}, {1, 512}} {
		if _, err := c.ReadAt(make([]byte, r.n), r.off); !errors.Is(err, client.ErrUnaligned) {
			t.Errorf("read of %d at %d: %v, want ErrUnaligned", r.n, r.off, err)
		}
	}
}

// nbdkit's error filter: errors the server sends arrive as errnos.
func TestNBDKitErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "k.sock")
	activated(t, sock, "nbdkit", "-f", "--filter=error", "memory", "1M",
		"error-pwrite=ENOSPC", "error-pwrite-rate=100%", "error-pread=EIO", "error-pread-rate=100%",
		"error-trim=EPERM", "error-trim-rate=100%")
	c := dial(t, "nbd+unix:///?socket="+sock, client.Options{Writable: true})
	if _, err := c.WriteAt(make([]byte, 4096), 0); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("write: %v, want ENOSPC", err)
	}
	if _, err := c.ReadAt(make([]byte, 4096), 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("read: %v, want EIO", err)
	}
	if err := c.Trim(0, 4096); !errors.Is(err, syscall.EPERM) {
		t.Errorf("trim: %v, want EPERM", err)
	}
	if err := c.Flush(); err != nil {
		t.Errorf("flush after errors: %v", err)
	}
}
