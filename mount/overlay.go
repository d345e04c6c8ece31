package mount

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// cowBlock is the overlay's copy-on-write granularity.
const cowBlock = 4096

// overlay is a throwaway copy-on-write view of a read-only image: writes
// (the kernel replaying a filesystem journal) land in an unlinked sparse
// file, reads of blocks never written fall through to the base image. The
// base is never written; everything written is gone on Close.
//
// Readers take no lock: a block's dirty bit is set only after its data is
// in the file. Writers are serialised by wmu, because a write that covers
// part of a clean block copies the rest of it from the base first.
type overlay struct {
	base  Image
	size  int64
	cow   *os.File
	dirty bitmap
	wmu   sync.Mutex
}

var _ Image = (*overlay)(nil)

// newOverlay makes an overlay of base whose written blocks live in an
// unlinked temporary file in dir.
func newOverlay(base Image, dir string) (*overlay, error) {
	f, err := os.CreateTemp(dir, "cow-*")
	if err != nil {
		return nil, fmt.Errorf("mount: overlay file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("mount: overlay file: %w", err)
	}
	size := base.Size()
	return &overlay{base: base, size: size, cow: f, dirty: newBitmap((size + cowBlock - 1) / cowBlock)}, nil
}

func (o *overlay) Size() int64  { return o.size }
func (o *overlay) Flush() error { return nil } // throwaway: nothing to keep
func (o *overlay) Close() error { return o.cow.Close() }

func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("mount: overlay read at %d: %w", off, os.ErrInvalid)
	}
	if off >= o.size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := o.size - off; int64(want) > rest {
		p = p[:rest]
	}
	// Serve runs of blocks that share a dirty state with one read each.
	for done := 0; done < len(p); {
		pos := off + int64(done)
		blk := pos / cowBlock
		d := o.dirty.get(blk)
		end := (blk + 1) * cowBlock
		for end < off+int64(len(p)) && o.dirty.get(end/cowBlock) == d {
			end += cowBlock
		}
		n := int(min(end, off+int64(len(p))) - pos)
		var err error
		if d {
			_, err = o.cow.ReadAt(p[done:done+n], pos)
		} else {
			_, err = o.base.ReadAt(p[done:done+n], pos)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return done, err
		}
		done += n
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}

func (o *overlay) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > o.size {
		return 0, fmt.Errorf("mount: overlay write of %d bytes at %d past the end (%d): %w", len(p), off, o.size, os.ErrInvalid)
	}
	o.wmu.Lock()
	defer o.wmu.Unlock()
	var buf []byte
	for done := 0; done < len(p); {
		pos := off + int64(done)
		blk := pos / cowBlock
		start := blk * cowBlock
		n := int(min((blk+1)*cowBlock, off+int64(len(p))) - pos)
		if pos == start && n == cowBlock || o.dirty.get(blk) {
			// Whole block, or already ours: write straight through.
			if _, err := o.cow.WriteAt(p[done:done+n], pos); err != nil {
				return done, err
			}
		} else {
			// Part of a clean block: copy the block up, then merge.
			if buf == nil {
				buf = make([]byte, cowBlock)
			}
			blen := int(min(cowBlock, o.size-start))
			if _, err := o.base.ReadAt(buf[:blen], start); err != nil && !errors.Is(err, io.EOF) {
				return done, err
			}
			copy(buf[pos-start:], p[done:done+n])
			if _, err := o.cow.WriteAt(buf[:blen], start); err != nil {
				return done, err
			}
		}
		o.dirty.set(blk)
		done += n
	}
	return len(p), nil
}

// bitmap is a dirty-block set allocated in pages on first write, so a
// terabyte image costs nothing until the journal replay touches it.
type bitmap struct {
	pages []atomic.Pointer[bitPage]
}

const pageBits = 1 << 16 // blocks per page: 256 MiB of image

type bitPage [pageBits / 64]atomic.Uint64

func newBitmap(blocks int64) bitmap {
	return bitmap{pages: make([]atomic.Pointer[bitPage], (blocks+pageBits-1)/pageBits)}
}

func (b *bitmap) get(blk int64) bool {
	if blk/pageBits >= int64(len(b.pages)) {
		return false
	}
	p := b.pages[blk/pageBits].Load()
	if p == nil {
		return false
	}
	i := blk % pageBits
	return p[i/64].Load()&(1<<(i%64)) != 0
}

// set must be called with the writer lock held (it allocates pages).
func (b *bitmap) set(blk int64) {
	slot := &b.pages[blk/pageBits]
	p := slot.Load()
	if p == nil {
		p = new(bitPage)
		slot.Store(p)
	}
	i := blk % pageBits
	p[i/64].Or(1 << (i % 64))
}
