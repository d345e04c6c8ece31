package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// qemuNBD serves a qcow2 image read-only with its dirty bitmap b0 on a
// free port until stop is called or the test ends; it returns the URI.
func qemuNBD(t *testing.T, img string) (uri string, stop func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("qemu-nbd", "--persistent", "-r", "-b", "127.0.0.1", "-p", fmt.Sprint(port), "-x", "vm", "-f", "qcow2", "-B", "b0", img)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("qemu-nbd: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop = func() {
		select {
		case <-done:
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
	t.Cleanup(stop)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-nbd did not listen: %s", out.String())
		}
	}
	return fmt.Sprintf("nbd://127.0.0.1:%d/vm", port), stop
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// A pull from a running VM's disk (qemu-nbd with a persistent dirty
// bitmap): the first import reads only allocated data; the next, with
// --dirty-bitmap, reads only what the bitmap marks; each version reads
// back as the qcow2 was.
func TestImportFromNBDWithDirtyBitmap(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "vm.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "64M")
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 1 0 8M", "-c", "write -P 7 20M 1M", img)
	run(t, "qemu-img", "bitmap", "--add", img, "b0")
	s, err := Open(Options{Dir: filepath.Join(dir, "data")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()

	// imports img as it is now, and checks the new version against it.
	pull := func(bitmap string, wantRead int64) {
		t.Helper()
		uri, stop := qemuNBD(t, img)
		res, err := s.Import(ctx, ImportRequest{Volume: "vm", Source: uri, DirtyBitmap: bitmap}, nil)
		stop()
		if err != nil {
			t.Fatal(err)
		}
		if res.Read != wantRead {
			t.Fatalf("import read %d bytes from the server, want %d", res.Read, wantRead)
		}
		raw := filepath.Join(dir, "vm.raw")
		run(t, "qemu-img", "convert", "-O", "raw", img, raw)
		want, err := os.ReadFile(raw)
		if err != nil {
			t.Fatal(err)
		}
		view, err := s.OpenView("vm@" + res.Time.String())
		if err != nil {
			t.Fatal(err)
		}
		defer view.Close()
		got := make([]byte, len(want))
		if _, err := view.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("version at %s differs from the image it was pulled from", res.Time)
		}
	}
	pull("", 9<<20)
	// The VM writes: 128 KiB of data, 1 MiB zeroed, 64 KiB in a hole.
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 9 4M 128k", "-c", "write -z 20M 1M", "-c", "write -P 3 40M 64k", img)
	// The zeroed MiB is marked dirty but reads as a hole: not read.
	pull("b0", 128<<10+64<<10)

	uri, _ := qemuNBD(t, img)
	for _, c := range []struct {
		req  ImportRequest
		want string
	}{
		{ImportRequest{Volume: "vm", Source: uri, DirtyBitmap: "nope"}, `offers no dirty bitmap "nope"`},
		{ImportRequest{Volume: "other", Source: uri, DirtyBitmap: "b0"}, "import it once without --dirty-bitmap"},
		{ImportRequest{Volume: "vm", Source: "nbd+unix:///vm?socket=/tmp/x", DirtyBitmap: "b0"}, "not unix sockets"},
	} {
		_, err := s.Import(ctx, c.req, nil)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("import %+v: %v, want an invalid-argument error saying %q", c.req, err, c.want)
		}
	}
}
