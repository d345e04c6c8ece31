package nbd_test

import (
	"bytes"
	"sync/atomic"
	"testing"

	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/nbd/nbdtest"
)

// resident is a gated backend that says every 64 KiB block with an even
// number is in memory, and counts the reads it said so for.
type resident struct {
	*gated
	yes atomic.Int64
}

func (r *resident) Resident(off, n int64) bool {
	if off <= r.at && r.at < off+n {
		return false
	}
	if (off/65536)%2 != 0 || (off+n-1)/65536 != off/65536 {
		return false
	}
	r.yes.Add(1)
	return true
}

func newResident(t *testing.T) (*resident, *harness) {
	mem := nbdtest.NewMemory(testSize, testBlock)
	mem.Fill(pattern(4<<20, 3), 0)
	r := &resident{gated: newGated(mem, 3<<20)}
	h := startServer(t, mem, nbdtest.NewResolver(&nbd.Export{Name: "r", Backend: r, MultiConn: true}))
	return r, h
}

// A read the backend holds in memory is served by the reader itself,
// alone or while a slow read holds a worker, which it then overtakes.
// Every reply is complete and correct.
func TestResidentReadsInlineAndOvertaking(t *testing.T) {
	r, h := newResident(t)
	c, _ := h.connect("r", true, false)
	want := pattern(4<<20, 3)
	readEven := func(cookie uint64, i int) {
		t.Helper()
		off := uint64(i) * 2 * 65536 // even blocks: resident
		if err := c.Send(0, nbd.CmdRead, cookie, off, 8192, nil); err != nil {
			t.Fatal(err)
		}
		rep := ok(t)(c.ReadReply())
		if rep.Cookie != cookie || !bytes.Equal(rep.Data, want[off:off+8192]) {
			t.Fatalf("read at %d: cookie %d, or other bytes", off, rep.Cookie)
		}
	}
	for i := range 10 {
		readEven(uint64(100+i), i)
	}
	if n := r.yes.Load(); n != 10 {
		t.Fatalf("backend asked %d times for lone resident reads, want 10", n)
	}
	if err := c.Send(0, nbd.CmdRead, 1, 3<<20, 4096, nil); err != nil {
		t.Fatal(err)
	}
	<-r.entered
	for i := range 10 {
		readEven(uint64(200+i), i) // overtakes cookie 1
	}
	if n := r.yes.Load(); n != 20 {
		t.Fatalf("%d of 10 resident reads served by the reader while a worker held a read", n-10)
	}
	close(r.gate)
	if rep := ok(t)(c.ReadReply()); rep.Cookie != 1 || !bytes.Equal(rep.Data, want[3<<20:3<<20+4096]) {
		t.Fatalf("the slow read: cookie %d", rep.Cookie)
	}
	readEven(300, 3)
	if n := r.yes.Load(); n != 21 {
		t.Fatal("reads are not served by the reader once the workers are idle")
	}
}

// Inline replies and the writer's batches share the connection: lone
// resident reads alternate with bursts of reads (resident and not),
// writes and block status, and every reply comes back whole, once, in
// plaintext and over TLS.
func TestResidentMixedWithBursts(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		mem := nbdtest.NewMemory(testSize, testBlock)
		data := pattern(4<<20, 5)
		mem.Fill(data, 0)
		r := &resident{gated: newGated(mem, -1)}
		pki, err := nbdtest.NewPKI(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		h := startServer(t, mem, nbdtest.NewResolver(&nbd.Export{Name: "r", Backend: r}), func(s *nbd.Server) {
			if useTLS {
				s.TLSConfig = pki.ServerConfig()
			}
		})
		c := h.dial()
		if err := c.StartFixed(); err != nil {
			t.Fatal(err)
		}
		if useTLS {
			if err := c.StartTLS(pki.ClientConfig(&pki.Client)); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.StructuredReplies(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.MetaContexts(nbd.OptSetMetaContext, "r", nbd.MetaContextBaseAllocation); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Go("r"); err != nil {
			t.Fatal(err)
		}
		readAt := map[uint64]uint64{}
		cookie := uint64(0)
		read := func(off uint64) []byte {
			cookie++
			c.ExpectRead(cookie, off, 16384)
			readAt[cookie] = off
			return nbdtest.Request(0, nbd.CmdRead, cookie, off, 16384, nil)
		}
		for round := range 150 {
			var burst []byte
			want := 1
			burst = append(burst, read(uint64(round%32)*2*65536)...) // resident
			if round%2 == 1 {
				burst = append(burst, read(uint64(round%32)*2*65536+65536)...) // not
				cookie++
				burst = append(burst, nbdtest.Request(0, nbd.CmdWrite, cookie, 8<<20, 512, pattern(512, 1))...)
				cookie++
				burst = append(burst, nbdtest.Request(0, nbd.CmdBlockStatus, cookie, 0, 1<<20, nil)...)
				want = 4
			}
			if err := c.Write(burst); err != nil {
				t.Fatal(err)
			}
			for range want {
				rep, err := c.ReadReply()
				if err != nil || rep.Errno != 0 {
					t.Fatalf("tls=%v round %d: %+v %v", useTLS, round, rep, err)
				}
				if off, isRead := readAt[rep.Cookie]; isRead && !bytes.Equal(rep.Data, data[off:off+16384]) {
					t.Fatalf("tls=%v: read at %d returned other bytes", useTLS, off)
				}
				delete(readAt, rep.Cookie)
			}
		}
		if len(readAt) != 0 {
			t.Fatalf("tls=%v: %d reads never answered", useTLS, len(readAt))
		}
		// Each round's first read finds the workers idle: the replies of
		// the round before were counted out before they were written.
		if n := r.yes.Load(); n != 150 {
			t.Fatalf("tls=%v: %d reads served inline, want 150", useTLS, n)
		}
		if err := c.Disconnect(); err != nil {
			t.Fatal(err)
		}
	}
}
