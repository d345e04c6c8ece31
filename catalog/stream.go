package catalog

import (
	"fmt"
	"io"
	"sort"
	"sync"
)

// maxStreamStash is the most bytes a streamSource keeps for reads that
// come behind the stream's position: the import reads its segments in
// order, a few workers apart, so this is a reorder window, never the
// image.
const maxStreamStash = 512 << 20

// streamSource serves ReadAt from a stream that can only be read in order
// (the body of an import sent over the network). A read ahead of the
// stream reads up to it and keeps what it skipped; a read behind it takes
// what was kept. No read ever waits for another, so a failing reader
// cannot stall the rest.
type streamSource struct {
	mu struct {
		sync.Mutex
		r      io.Reader
		pos    int64     // bytes read from r
		stash  []keptRun // skipped bytes, by offset, not overlapping
		stored int64
		err    error // the stream's failure, for every later read
	}
}

// keptRun is a run of bytes kept from the stream.
type keptRun struct {
	off  int64
	data []byte
}

func newStreamSource(r io.Reader) *streamSource {
	s := &streamSource{}
	s.mu.r = r
	return s
}

func (s *streamSource) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if off < s.mu.pos {
		return s.fromStashLocked(p, off)
	}
	if s.mu.err != nil {
		return 0, s.mu.err
	}
	if skip := off - s.mu.pos; skip > 0 {
		if s.mu.stored+skip > maxStreamStash {
			return 0, fmt.Errorf("import stream: read at %d is %d bytes past the stream; the reader fell too far behind", off, skip)
		}
		buf := make([]byte, skip)
		if err := s.fillLocked(buf); err != nil {
			return 0, err
		}
		s.mu.stash = append(s.mu.stash, keptRun{off: off - skip, data: buf})
		s.mu.stored += skip
	}
	if err := s.fillLocked(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// fillLocked reads len(p) bytes of the stream into p.
func (s *streamSource) fillLocked(p []byte) error {
	n, err := io.ReadFull(s.mu.r, p)
	s.mu.pos += int64(n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		s.mu.err = fmt.Errorf("import stream at byte %d: %w", s.mu.pos, err)
		return s.mu.err
	}
	return nil
}

// fromStashLocked serves a read behind the stream from the kept bytes and
// forgets them: every range is read once.
func (s *streamSource) fromStashLocked(p []byte, off int64) (int, error) {
	st := s.mu.stash
	i := sort.Search(len(st), func(i int) bool { return st[i].off+int64(len(st[i].data)) > off })
	if i == len(st) || st[i].off > off || off+int64(len(p)) > st[i].off+int64(len(st[i].data)) {
		return 0, fmt.Errorf("import stream: bytes %d-%d were read already", off, off+int64(len(p)))
	}
	pc := st[i]
	start := off - pc.off
	copy(p, pc.data[start:])
	end := start + int64(len(p))
	var keep []keptRun
	if start > 0 {
		keep = append(keep, keptRun{off: pc.off, data: pc.data[:start]})
	}
	if end < int64(len(pc.data)) {
		keep = append(keep, keptRun{off: off + int64(len(p)), data: pc.data[end:]})
	}
	s.mu.stash = append(st[:i], append(keep, st[i+1:]...)...)
	s.mu.stored -= int64(len(p))
	return len(p), nil
}
