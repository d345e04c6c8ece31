package recovery

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/nbd/nbdtest"
)

// nbdServer serves a fresh in-memory export "t" on addr ("127.0.0.1:0"
// for any port) until stop; it returns the address.
func nbdServer(t *testing.T, addr string) (string, *nbdtest.Memory, func()) {
	t.Helper()
	mem := nbdtest.NewMemory(1<<20, 4096)
	srv := &nbd.Server{Resolver: nbdtest.NewResolver(&nbd.Export{Name: "t", Backend: mem})}
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); srv.Serve(ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			srv.Shutdown(ctx) // closes the connections
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), mem, stop
}

// TestNBDTargetRedials: a target whose server goes away and comes back
// dials it again; the writes the old connection acknowledged without a
// FLUSH go to lost, a FLUSH that spanned the new connection fails, and
// once the copy is cancelled (interrupt) a request waiting for the
// server fails at once.
func TestNBDTargetRedials(t *testing.T) {
	addr, _, stop := nbdServer(t, "127.0.0.1:0")
	o, err := dialTarget(context.Background(), context.Background(), "nbd://"+addr+"/t", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	nt := o.t.(*nbdTarget)
	nt.retryFor = 10 * time.Second
	var mu sync.Mutex
	var lost [][2]int64
	nt.setLost(func(off, n int64) { mu.Lock(); lost = append(lost, [2]int64{off, n}); mu.Unlock() })

	flushed := bytes.Repeat([]byte{1}, 4096)
	if _, err := nt.WriteAt(flushed, 0); err != nil {
		t.Fatal(err)
	}
	if err := nt.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := nt.WriteAt(bytes.Repeat([]byte{2}, 8192), 65536); err != nil {
		t.Fatal(err)
	}
	stop() // the server goes; a new one, empty, comes on the same port
	_, mem2, stop2 := nbdServer(t, addr)
	if err := nt.Flush(); err == nil || !bytes.Contains([]byte(err.Error()), []byte("replaced")) {
		t.Fatalf("a flush across a new connection: %v, want an error", err)
	}
	mu.Lock()
	got := append([][2]int64(nil), lost...)
	mu.Unlock()
	if len(got) != 1 || got[0] != [2]int64{65536, 8192} {
		t.Fatalf("copied again: %v, want the unflushed write only, [65536 8192]", got)
	}
	if _, err := nt.WriteAt(flushed, 4096); err != nil {
		t.Fatalf("a write on the new connection: %v", err)
	}
	if err := nt.Flush(); err != nil {
		t.Fatalf("a flush on the new connection: %v", err)
	}
	buf := make([]byte, 4096)
	if _, err := mem2.ReadAt(buf, 4096); err != nil || !bytes.Equal(buf, flushed) {
		t.Fatalf("the new server did not get the write: %v", err)
	}
	if !nt.Down().IsZero() {
		t.Fatal("the target counts as out of reach while it answers")
	}

	stop2() // gone for good: requests wait until the copy is cancelled
	done := make(chan error, 1)
	go func() { _, err := nt.WriteAt(flushed, 0); done <- err }()
	time.Sleep(300 * time.Millisecond)
	if nt.Down().IsZero() {
		t.Error("the target is not reported out of reach while it is dialled again")
	}
	select {
	case err := <-done:
		t.Fatalf("a write while the server is gone returned at once: %v", err)
	default:
	}
	o.interrupt()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a write with no server succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a write still waits for the server after the copy was cancelled")
	}
}
