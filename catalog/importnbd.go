package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/nbd/client"
	"github.com/rewind-dev/rewind/timeline"
)

// IsNBDURI reports whether an import source names an NBD export
// (nbd://HOST[:PORT]/EXPORT, nbds://...; unix socket URIs are refused
// by the import, not opened as files).
func IsNBDURI(s string) bool {
	for _, p := range []string{"nbd://", "nbds://", "nbd+unix://", "nbds+unix://"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// dirtyBitmapContext is QEMU's metadata context of a dirty bitmap.
func dirtyBitmapContext(name string) string { return "qemu:dirty-bitmap:" + name }

// openNBDSource dials an import's NBD source and fills o with its size,
// where it holds data (base:allocation), and with a dirty bitmap, what
// changed. Only TCP URIs are taken: the daemon connects to no socket
// path for a caller.
func (s *Service) openNBDSource(ctx context.Context, r ImportRequest, o *timeline.ImportOptions) (*client.Conn, error) {
	t, err := client.ParseURI(r.Source)
	if err != nil {
		return nil, errorf(ErrInvalid, "%v", err)
	}
	if t.Network != "tcp" {
		return nil, errorf(ErrInvalid, "%s: import dials nbd://HOST[:PORT]/EXPORT, not unix sockets", r.Source)
	}
	var base *timeline.Volume
	if r.DirtyBitmap != "" {
		if base, err = s.tl.Volume(r.Volume); err != nil {
			return nil, errorf(ErrInvalid, "--dirty-bitmap needs %s to have a version to keep the clean blocks from; import it once without --dirty-bitmap", r.Volume)
		}
	}
	contexts := []string{nbd.MetaContextBaseAllocation}
	if r.DirtyBitmap != "" {
		contexts = append(contexts, dirtyBitmapContext(r.DirtyBitmap))
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := client.Dial(dctx, r.Source, client.Options{MetaContexts: contexts})
	if err != nil {
		if errors.Is(err, client.ErrUnreachable) || errors.Is(err, client.ErrUnknownExport) || errors.Is(err, client.ErrTLSRequired) {
			return nil, errorf(ErrInvalid, "import source: %v", err)
		}
		return nil, fmt.Errorf("import source %s: %w", r.Source, err)
	}
	o.Size = conn.Size()
	if o.Size == 0 {
		conn.Close()
		return nil, errorf(ErrInvalid, "source %s is empty", r.Source)
	}
	if conn.Info().MetaContext(nbd.MetaContextBaseAllocation) {
		if o.Data, err = extentsWhere(conn, nbd.MetaContextBaseAllocation, func(f uint32) bool { return f&nbd.StateHole == 0 }); err != nil {
			conn.Close()
			return nil, fmt.Errorf("allocation of %s: %w", r.Source, err)
		}
	}
	if r.DirtyBitmap != "" {
		bm := dirtyBitmapContext(r.DirtyBitmap)
		if !conn.Info().MetaContext(bm) {
			conn.Close()
			return nil, errorf(ErrInvalid, "%s offers no dirty bitmap %q (serve it with qemu-nbd -B %s, or export it through libvirt's backup API)", r.Source, r.DirtyBitmap, r.DirtyBitmap)
		}
		if base.Size != o.Size {
			conn.Close()
			return nil, errorf(ErrInvalid, "%s is %d bytes and %s %d: a dirty bitmap cannot say what changed across a resize; import without --dirty-bitmap", r.Source, o.Size, r.Volume, base.Size)
		}
		if o.Changed, err = extentsWhere(conn, bm, func(f uint32) bool { return f&1 != 0 }); err != nil {
			conn.Close()
			return nil, fmt.Errorf("dirty bitmap %s of %s: %w", r.DirtyBitmap, r.Source, err)
		}
	}
	return conn, nil
}

// extentsWhere walks the whole export in one metadata context and returns
// the sorted ranges whose flags satisfy keep (never nil).
func extentsWhere(c *client.Conn, context string, keep func(uint32) bool) ([]timeline.Range, error) {
	out := []timeline.Range{}
	for off := int64(0); off < c.Size(); {
		ex, err := c.BlockStatus(context, off, c.Size()-off)
		if err != nil {
			return nil, err
		}
		for _, e := range ex {
			if keep(e.Flags) {
				if k := len(out); k > 0 && out[k-1].Offset+out[k-1].Length == e.Offset {
					out[k-1].Length += e.Length
				} else {
					out = append(out, timeline.Range{Offset: e.Offset, Length: e.Length})
				}
			}
			off = e.Offset + e.Length
		}
	}
	return out, nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}
