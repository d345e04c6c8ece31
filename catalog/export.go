package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/rewind-dev/rewind/timeline"
	"golang.org/x/sync/errgroup"
)

// exportPiece is the most bytes read at once by an export worker.
const exportPiece = 8 << 20

// piece is a range of the view: data to read, or a hole.
type piece struct {
	off, n int64
	hole   bool
	data   chan []byte
}

// Export writes the contents of spec to r.File, a file or block device
// opened by the caller (sparse where it can), or to w when Dest is "-".
func (s *Service) Export(ctx context.Context, r ExportRequest, w io.Writer, progress ProgressFunc) (*ExportResult, error) {
	v, t, _, err := s.Resolve(r.Spec)
	if err != nil {
		return nil, err
	}
	view, err := s.tl.ViewAt(v.ID, t)
	if err != nil {
		return nil, err
	}
	defer view.Close()
	start := time.Now()
	var out writerAt
	sparse := false
	if r.Dest == "-" {
		out = &streamWriter{w: w}
	} else {
		if r.File == nil {
			return nil, errorf(ErrInvalid, "export to %s: no open destination was passed; the caller opens it (OpenDest)", r.Dest)
		}
		if sparse, err = prepareDest(r.File, r.Dest, view.Size()); err != nil {
			return nil, err
		}
		out = r.File
	}
	data, err := s.copyView(ctx, view, out, sparse, progress)
	if err != nil {
		return nil, err
	}
	if f, ok := out.(*os.File); ok {
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("sync %s: %w", r.Dest, err)
		}
	}
	return &ExportResult{Spec: r.Spec, Time: Time(t), Size: view.Size(), Data: data, Duration: time.Since(start)}, nil
}

type writerAt interface {
	WriteAt(p []byte, off int64) (int, error)
}

// streamWriter writes in order; copyView hands it pieces in order.
type streamWriter struct{ w io.Writer }

func (s *streamWriter) WriteAt(p []byte, _ int64) (int, error) { return s.w.Write(p) }

// OpenDest opens an export's destination for writing, with the rights of
// the calling process: a block device, or a file, created when missing.
// An existing file is not truncated here but by Export, once the instant
// to export is known, so that a bad spec leaves it as it was. created says
// whether OpenDest made the file, for the caller to remove it when the
// export fails.
func OpenDest(path string) (f *os.File, created bool, err error) {
	if strings.HasPrefix(path, "nbd://") || strings.HasPrefix(path, "nbds://") {
		return nil, false, errorf(ErrInvalid, "exporting to an NBD URI is not supported yet; export to a file and copy it with: nbdcopy image.raw %s", path)
	}
	st, err := os.Stat(path)
	if err == nil && st.Mode()&os.ModeDevice != 0 {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return nil, false, fmt.Errorf("open %s: %w", path, err)
		}
		return f, false, nil
	}
	if err == nil && st.IsDir() {
		return nil, false, errorf(ErrInvalid, "%s is a directory; name a file", path)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	flags := os.O_WRONLY | os.O_CREATE
	if err != nil {
		flags |= os.O_EXCL // created is true only for a file this call made
	}
	f, err = os.OpenFile(path, flags, 0o644)
	if err != nil {
		return nil, false, fmt.Errorf("create %s: %w", path, err)
	}
	return f, flags&os.O_EXCL != 0, nil
}

// prepareDest makes f ready to take an export of size bytes: a block
// device must hold them; a regular file is emptied and sized, all holes,
// and written sparse. name is for messages.
func prepareDest(f *os.File, name string, size int64) (sparse bool, err error) {
	st, err := f.Stat()
	if err != nil {
		return false, err
	}
	switch {
	case st.Mode()&os.ModeDevice != 0:
		devSize, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			return false, fmt.Errorf("size of %s: %w", name, err)
		}
		if devSize < size {
			return false, errorf(ErrInvalid, "%s holds %d bytes; the export needs %d", name, devSize, size)
		}
		return false, nil
	case st.Mode().IsRegular():
		if err := f.Truncate(0); err != nil {
			return false, fmt.Errorf("truncate %s: %w", name, err)
		}
		if err := f.Truncate(size); err != nil {
			return false, fmt.Errorf("size %s: %w", name, err)
		}
		return true, nil
	}
	return false, errorf(ErrInvalid, "destination %s is not a regular file or a block device", name)
}

// copyView copies view to out: pieces read in parallel, written in order.
// With sparse, holes are skipped (the destination already reads them as
// zeroes); otherwise zeroes are written.
func (s *Service) copyView(ctx context.Context, view *timeline.View, out writerAt, sparse bool, progress ProgressFunc) (int64, error) {
	size := view.Size()
	g, ctx := errgroup.WithContext(ctx)
	workers := runtime.GOMAXPROCS(0) * 2
	jobs := make(chan *piece, workers)
	queue := make(chan *piece, workers*2)
	g.Go(func() error { // producer: extents cut into pieces
		defer close(jobs)
		defer close(queue)
		for off := int64(0); off < size; {
			exts, err := view.Extents(off, size-off)
			if err != nil {
				return err
			}
			for _, e := range exts {
				for o := e.Offset; o < e.Offset+e.Length; o += exportPiece {
					p := &piece{off: o, n: min(exportPiece, e.Offset+e.Length-o), hole: e.Hole, data: make(chan []byte, 1)}
					select {
					case queue <- p:
					case <-ctx.Done():
						return ctx.Err()
					}
					if !p.hole {
						select {
						case jobs <- p:
						case <-ctx.Done():
							return ctx.Err()
						}
					}
				}
				off = e.Offset + e.Length
			}
		}
		return nil
	})
	// Buffers go round: a fresh 8 MiB buffer per piece cost a page fault
	// per 4 KiB, a fifth of an export's time. At most every worker's, every
	// queued piece's and the writer's are in use at once.
	free := make(chan []byte, workers+cap(queue)+1)
	getBuf := func(n int64) []byte {
		select {
		case b := <-free:
			return b[:n]
		default:
			return make([]byte, n, exportPiece)
		}
	}
	for range workers {
		g.Go(func() error {
			for p := range jobs {
				buf := getBuf(p.n)
				// One pass over the disk: fill no cache.
				if _, err := view.ReadAtScan(buf, p.off); err != nil {
					return fmt.Errorf("read at %d: %w", p.off, err)
				}
				p.data <- buf
			}
			return nil
		})
	}
	var data int64
	g.Go(func() error { // writer, in order
		zero := make([]byte, exportPiece)
		for p := range queue {
			var buf []byte
			if p.hole {
				if sparse {
					report(progress, p.off+p.n, size)
					continue
				}
				buf = zero[:p.n]
			} else {
				select {
				case buf = <-p.data:
				case <-ctx.Done():
					return ctx.Err()
				}
				data += p.n
			}
			if _, err := out.WriteAt(buf, p.off); err != nil {
				return fmt.Errorf("write at %d: %w", p.off, err)
			}
			if !p.hole {
				select {
				case free <- buf[:cap(buf)]:
				default:
				}
			}
			report(progress, p.off+p.n, size)
		}
		return nil
	})
	return data, g.Wait()
}

func report(p ProgressFunc, done, total int64) {
	if p != nil {
		p(done, total)
	}
}
