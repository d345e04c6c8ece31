package recovery

import (
	"context"
	"sync"

	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/timeline"
	"github.com/rewind-dev/rewind/timeline/hydrate"
)

// Disk is what a recovery's export and FUSE image serve: the clone's
// head while the copy runs, with every write reported to the copier,
// and the target itself after cutover. One Disk is shared by every
// connection and image of the recovery. Its methods are safe for
// concurrent use.
type Disk struct {
	view *timeline.View
	cp   *hydrate.Copier // read with mu held; Retry swaps it with mu held exclusively
	mu   struct {
		sync.RWMutex        // I/O holds it shared; the cutover switch exclusively
		target       Target // set at cutover: serve it directly
	}
}

var (
	_ nbd.Backend    = (*Disk)(nil)
	_ nbd.FastZeroer = (*Disk)(nil)
	_ nbd.Resident   = (*Disk)(nil)
)

// pause stops the Disk's I/O once requests in progress finish; the
// returned function lets I/O go on.
func (d *Disk) pause() func() {
	d.mu.Lock()
	return d.mu.Unlock
}

// switchTo serves t from now on; called with I/O paused.
func (d *Disk) switchTo(t Target) { d.mu.target = t }

// CutOver reports whether the Disk serves the target.
func (d *Disk) CutOver() bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.mu.target != nil
}

// Size is the volume's size (a larger target serves no more).
func (d *Disk) Size() int64 { return d.view.Size() }

// BlockSize is the volume's block size.
func (d *Disk) BlockSize() int64 { return d.view.BlockSize() }

func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if t := d.mu.target; t != nil {
		return t.ReadAt(p, off)
	}
	n, err := d.view.ReadAt(p, off)
	d.cp.Prioritize(off, int64(len(p)))
	return n, err
}

func (d *Disk) WriteAt(p []byte, off int64) (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if t := d.mu.target; t != nil {
		return t.WriteAt(p, off)
	}
	w, err := d.cp.BeginWrite(context.Background(), off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	n, err := d.view.WriteAt(p, off)
	if err != nil {
		w.Abort()
		return n, err
	}
	// A target error fails the copy (status says why); the clone holds
	// the write, so it is acknowledged.
	w.Finish(p)
	return n, nil
}

func (d *Disk) WriteZeroes(off, n int64) error {
	return d.zero(off, n, d.view.WriteZeroes)
}

func (d *Disk) Trim(off, n int64) error {
	return d.zero(off, n, d.view.Trim)
}

func (d *Disk) zero(off, n int64, clone func(off, n int64) error) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if t := d.mu.target; t != nil {
		return t.WriteZeroes(off, n)
	}
	w, err := d.cp.BeginWrite(context.Background(), off, n)
	if err != nil {
		return err
	}
	if err := clone(off, n); err != nil {
		w.Abort()
		return err
	}
	w.FinishZeroes()
	return nil
}

// Flush makes acknowledged writes durable: in the clone before cutover
// (the target catches up through the copier), on the target after.
func (d *Disk) Flush() error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if t := d.mu.target; t != nil {
		return t.Flush()
	}
	return d.view.Flush()
}

func (d *Disk) Extents(off, n int64) ([]nbd.Extent, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.mu.target != nil {
		return []nbd.Extent{{Offset: off, Length: n}}, nil
	}
	ex, err := d.view.Extents(off, n)
	if err != nil {
		return nil, err
	}
	out := make([]nbd.Extent, len(ex))
	for i, e := range ex {
		out[i] = nbd.Extent{Offset: e.Offset, Length: e.Length, Hole: e.Hole}
	}
	return out, nil
}

// FastZero: before cutover, zeroing whole blocks of the clone only
// writes hole markers.
func (d *Disk) FastZero(off, n int64) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	bs := d.view.BlockSize()
	return d.mu.target == nil && off%bs == 0 && n%bs == 0
}

// Resident: reads of the clone from memory are served at once.
func (d *Disk) Resident(off, n int64) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.mu.target == nil && d.view.Resident(off, n)
}

// Image is the Disk as a FUSE image; closing it leaves the Disk served.
type Image struct {
	*Disk
	Release func()
	once    sync.Once
}

func (i *Image) Close() error {
	if i.Release != nil {
		i.once.Do(i.Release)
	}
	return nil
}
