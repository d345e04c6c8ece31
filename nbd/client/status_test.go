package client_test

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/nbd/client"
)

// qemu-nbd serving a qcow2 image with a persistent dirty bitmap: the
// bitmap context marks just what was written since it was added, and
// base:allocation says where the data is.
func TestBlockStatusDirtyBitmapFromQemuNBD(t *testing.T) {
	img := filepath.Join(t.TempDir(), "d.qcow2")
	for _, args := range [][]string{
		{"qemu-img", "create", "-q", "-f", "qcow2", img, "4M"},
		{"qemu-io", "-f", "qcow2", "-c", "write -P 1 0 64k", img},
		{"qemu-img", "bitmap", "--add", img, "b0"},
		{"qemu-io", "-f", "qcow2", "-c", "write -P 2 1M 64k", "-c", "write -P 3 3M 128k", img},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	dir := t.TempDir()
	sock, pid := filepath.Join(dir, "q.sock"), filepath.Join(dir, "q.pid")
	daemon(t, pid, "qemu-nbd", "--fork", "--persistent", "--pid-file="+pid, "-k", sock, "-x", "disk", "-f", "qcow2", "-r", "-B", "b0", img)
	const bitmap = "qemu:dirty-bitmap:b0"
	c, err := client.Dial(context.Background(), "nbd+unix:///disk?socket="+sock,
		client.Options{MetaContexts: []string{nbd.MetaContextBaseAllocation, bitmap, "nosuch:context"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.Info().MetaContext(bitmap) || !c.Info().MetaContext(nbd.MetaContextBaseAllocation) || c.Info().MetaContext("nosuch:context") {
		t.Fatal("the contexts selected are not the ones the server offers")
	}
	dirty := collect(t, c, bitmap, 1)
	if want := []client.Extent{{Offset: 1 << 20, Length: 64 << 10, Flags: 1}, {Offset: 3 << 20, Length: 128 << 10, Flags: 1}}; !sameExtents(dirty, want) {
		t.Fatalf("dirty extents %+v, want %+v", dirty, want)
	}
	data := collect(t, c, nbd.MetaContextBaseAllocation, 0)
	var bytes int64
	for _, e := range data {
		bytes += e.Length
	}
	if bytes != 256<<10 {
		t.Fatalf("allocated extents %+v: %d bytes, want the 256 KiB written", data, bytes)
	}
	if _, err := c.BlockStatus("nosuch:context", 0, 4096); !errors.Is(err, client.ErrNoMetaContext) {
		t.Fatalf("block status of a context not selected: %v", err)
	}
}

// collect walks the whole export and returns the extents whose flags
// equal want (for base:allocation, 0 is data).
func collect(t *testing.T, c *client.Conn, context string, want uint32) []client.Extent {
	t.Helper()
	var out []client.Extent
	for off := int64(0); off < c.Size(); {
		ex, err := c.BlockStatus(context, off, c.Size()-off)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ex {
			if e.Offset != off {
				t.Fatalf("extent at %d, want %d", e.Offset, off)
			}
			if e.Flags == want {
				if k := len(out); k > 0 && out[k-1].Offset+out[k-1].Length == e.Offset {
					out[k-1].Length += e.Length
				} else {
					out = append(out, e)
				}
			}
			off += e.Length
		}
	}
	return out
}

func sameExtents(a, b []client.Extent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// rewind's own server answers base:allocation with its holes.
func TestBlockStatusFromRewindServer(t *testing.T) {
	s := startServer(t, nil)
	w := dial(t, s.uri("disk"), client.Options{})
	if _, err := w.WriteAt(pattern(9, 8192), 256<<10); err != nil {
		t.Fatal(err)
	}
	c := dial(t, s.uri("disk"), client.Options{MetaContexts: []string{nbd.MetaContextBaseAllocation}})
	data := collect(t, c, nbd.MetaContextBaseAllocation, 0)
	if want := []client.Extent{{Offset: 256 << 10, Length: 8192}}; !sameExtents(data, want) {
		t.Fatalf("data extents %+v, want %+v", data, want)
	}
}
