package client

import (
	"errors"
	"fmt"
	"math"

	"github.com/rewind-dev/rewind/nbd"
)

// Extent is one run of a BLOCK_STATUS answer. Flags mean what the
// metadata context says: for base:allocation, nbd.StateHole (1) and
// nbd.StateZero (2); for qemu:dirty-bitmap:NAME, 1 = dirty.
type Extent struct {
	Offset, Length int64
	Flags          uint32
}

// ErrNoMetaContext: BLOCK_STATUS for a context that was not selected.
var ErrNoMetaContext = errors.New("nbd client: metadata context not selected")

// BlockStatus asks how [off, off+n) stands in the metadata context
// named (selected with Options.MetaContexts). The answer starts at off,
// is in order and contiguous, and may cover less than n but never nothing.
func (c *Conn) BlockStatus(context string, off, n int64) ([]Extent, error) {
	id, ok := c.info.meta[context]
	if !ok {
		return nil, fmt.Errorf("%w: %q on %s; ask for it with Options.MetaContexts", ErrNoMetaContext, context, c.target)
	}
	if err := c.check("block status", off, n); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, nil
	}
	n = min(n, math.MaxUint32&^int64(c.info.sizes.Min-1))
	cl := c.send(&call{op: "block status", typ: nbd.CmdBlockStatus, off: off, length: n, metaID: id, done: make(chan struct{})}, 0, nil)
	if err := c.wait(cl); err != nil {
		return nil, err
	}
	var out []Extent
	at, end := off, off+n
	for _, e := range cl.extents {
		if at >= end {
			break
		}
		if e.Length == 0 {
			return nil, fmt.Errorf("%w: block status with an empty extent", ErrProtocol)
		}
		l := min(e.Length, end-at)
		out = append(out, Extent{Offset: at, Length: l, Flags: e.Flags})
		at += l
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: block status for %d bytes at %d answered with no extent for the context", ErrProtocol, n, off)
	}
	return out, nil
}
