package client_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"testing"

	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/nbd/client"
	"github.com/rewind-dev/rewind/nbd/nbdtest"
)

// Sixteen goroutines write, zero, trim, flush and read back their own
// regions at once over one connection; the server's memory must hold
// exactly what was written.
func TestRoundTripConcurrent(t *testing.T) {
	s := startServer(t, nil)
	c := dial(t, s.uri("disk"), client.Options{Writable: true})
	if c.Size() != testSize || !c.StructuredReplies() {
		t.Fatalf("size %d, want %d; structured replies %v", c.Size(), testSize, c.StructuredReplies())
	}
	info := c.Info()
	if !info.CanFlush() || !info.CanFUA() || !info.CanTrim() || !info.CanWriteZeroes() || !info.CanFastZero() || !info.CanMultiConn() || info.ReadOnly() {
		t.Fatalf("flags %#x lack what the server offers", info.Flags())
	}
	const region = 1 << 20
	want := make([]byte, testSize)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		off := int64(g) * region
		data := pattern(byte(g), region)
		copy(want[off:], data)
		// The middle quarter is zeroed, then the last 64 KiB trimmed.
		clear(want[off+region/4 : off+region/2])
		clear(want[off+region-65536 : off+region])
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				for i := int64(0); i < region; i += 64 << 10 {
					if _, err := c.WriteAt(data[i:i+64<<10], off+i); err != nil {
						return err
					}
				}
				if err := c.WriteZeroes(off+region/4, region/4, g%2 == 0); err != nil {
					return err
				}
				if err := c.Trim(off+region-65536, 65536); err != nil {
					return err
				}
				if err := c.Flush(); err != nil {
					return err
				}
				got := make([]byte, region)
				if _, err := c.ReadAt(got, off); err != nil {
					return err
				}
				if !bytes.Equal(got, want[off:off+region]) {
					return fmt.Errorf("region %d reads back wrong", g)
				}
				return nil
			}()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if !bytes.Equal(s.mem.Bytes(), want) {
		t.Fatal("the server's memory differs from what was written")
	}
	if s.mem.Flushes() < 16 {
		t.Fatalf("%d flushes reached the backend, want 16", s.mem.Flushes())
	}
	if _, err := c.WriteAtFUA([]byte("fua"), 7); err != nil {
		t.Fatal(err)
	}
	if s.mem.Dirty() != 0 {
		t.Fatal("a FUA write returned before the backend was flushed")
	}
}

// A request over the maximum payload is split, and pieces never exceed it.
func TestLargeRequestsSplit(t *testing.T) {
	big := &counting{Memory: nbdtest.NewMemory(48<<20, testBlock)}
	s := startServer(t, nil, &nbd.Export{Name: "big", Backend: big})
	// Simple replies here; TestRoundTripConcurrent has structured ones.
	c := dial(t, s.uri("big"), client.Options{SimpleReplies: true})
	if c.Info().MaxPayload() != nbd.MaxPayload || c.StructuredReplies() {
		t.Fatalf("max payload %d, want %d", c.Info().MaxPayload(), nbd.MaxPayload)
	}
	data := pattern(3, 40<<20+512)
	if n, err := c.WriteAt(data, 4096); err != nil || n != len(data) {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	got := make([]byte, len(data))
	if n, err := c.ReadAt(got, 4096); err != nil || n != len(got) {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("a split read returned other bytes than a split write wrote")
	}
	if w, r := big.maxWrite.Load(), big.maxRead.Load(); w != nbd.MaxPayload || r != nbd.MaxPayload {
		t.Fatalf("largest write %d, read %d reached the backend; want %d", w, r, nbd.MaxPayload)
	}
	if w := big.writes.Load(); w != 2 {
		t.Fatalf("%d writes for 40 MiB, want 2", w)
	}
	// Past the end: ReaderAt reads what there is, WriterAt refuses all.
	tail := make([]byte, 8192)
	if n, err := c.ReadAt(tail, big.Size()-4096); n != 4096 || err != io.EOF {
		t.Fatalf("read over the end = %d, %v; want 4096, EOF", n, err)
	}
	if _, err := c.WriteAt(tail, big.Size()-4096); !errors.Is(err, client.ErrOutOfRange) {
		t.Fatalf("write over the end: %v", err)
	}
}

// failing is a backend whose writes fail with ENOSPC and reads with EIO
// at chosen offsets.
type failing struct{ *counting }

const badOff = 1 << 20

func (f failing) WriteAt(p []byte, off int64) (int, error) {
	if off == badOff {
		return 0, fmt.Errorf("disk full: %w", syscall.ENOSPC)
	}
	return f.counting.WriteAt(p, off)
}

func (f failing) ReadAt(p []byte, off int64) (int, error) {
	if off == badOff {
		return 0, fmt.Errorf("bad sector: %w", syscall.EIO)
	}
	return f.counting.ReadAt(p, off)
}

// Server errors come back as errnos, with simple and structured replies,
// and the connection stays usable.
func TestErrorsMapped(t *testing.T) {
	fail := failing{&counting{Memory: nbdtest.NewMemory(4<<20, testBlock)}}
	fail.Fill(make([]byte, 4096), badOff) // data, not a hole the server answers itself
	s := startServer(t, nil, &nbd.Export{Name: "failing", Backend: fail})
	for _, simple := range []bool{false, true} {
		c := dial(t, s.uri("failing"), client.Options{Writable: true, SimpleReplies: simple})
		_, err := c.WriteAt(make([]byte, 512), badOff)
		var re *client.RequestError
		if !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, nbd.ENOSPC) || !errors.As(err, &re) || re.Op != "write" || re.Offset != badOff {
			t.Fatalf("simple=%v: write error %v, want ENOSPC at %d", simple, err, badOff)
		}
		if _, err := c.ReadAt(make([]byte, 512), badOff); !errors.Is(err, syscall.EIO) {
			t.Fatalf("simple=%v: read error %v, want EIO", simple, err)
		}
		// Ranges past the end are refused before they are sent.
		if err := c.WriteZeroes(4<<20, 512, false); !errors.Is(err, client.ErrOutOfRange) {
			t.Fatalf("zeroes past the end: %v", err)
		}
		if _, err := c.WriteAt([]byte("ok"), 0); err != nil {
			t.Fatalf("simple=%v: connection unusable after errors: %v", simple, err)
		}
	}

	// A read-only export: the client refuses writes without sending them.
	ro := dial(t, s.uri("ro"), client.Options{})
	if _, err := ro.WriteAt([]byte("x"), 0); !errors.Is(err, client.ErrReadOnly) {
		t.Fatalf("write to a read-only export: %v", err)
	}
	s.mem.Fill([]byte("ok"), 0)
	got := make([]byte, 2)
	if _, err := ro.ReadAt(got, 0); err != nil || string(got) != "ok" {
		t.Fatalf("read-only export reads %q, %v", got, err)
	}
}
