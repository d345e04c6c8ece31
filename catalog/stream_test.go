package catalog

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"testing"
)

// TestStreamSourceOutOfOrder reads a stream as an import does, segments
// handed to several workers whose reads reach it in any order, and gets
// every byte where it belongs.
func TestStreamSourceOutOfOrder(t *testing.T) {
	const seg, segs = 4096, 300
	data := make([]byte, seg*segs)
	for i := range data {
		data[i] = byte(rand.IntN(256))
	}
	s := newStreamSource(bytes.NewReader(data))
	out := make([]byte, len(data))
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if _, err := s.ReadAt(out[i*seg:(i+1)*seg], int64(i*seg)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	for i := range segs {
		next <- i
	}
	close(next)
	wg.Wait()
	if !bytes.Equal(out, data) {
		t.Fatal("bytes read out of order are not the stream's")
	}
	if s.mu.stored != 0 || len(s.mu.stash) != 0 {
		t.Fatalf("%d bytes still kept after every range was read", s.mu.stored)
	}
}

func TestStreamSourceErrors(t *testing.T) {
	s := newStreamSource(bytes.NewReader(make([]byte, 100)))
	buf := make([]byte, 10)
	if _, err := s.ReadAt(buf, 50); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadAt(buf, 50); err == nil {
		t.Fatal("a range read twice: no error")
	}
	if _, err := s.ReadAt(buf, 20); err != nil {
		t.Fatalf("a skipped range: %v", err)
	}
	if _, err := s.ReadAt(buf, 95); err == nil {
		t.Fatal("a read past the end of the stream: no error")
	}
	if _, err := s.ReadAt(buf, 96); err == nil {
		t.Fatal("after the stream failed, a read ahead: no error")
	}
}
