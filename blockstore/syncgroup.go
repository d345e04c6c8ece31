package blockstore

import "sync"

// syncGroup runs the syncs that callers ask for together as one: a caller
// needs a sync that starts after it called (one already under way may
// have missed what it wrote just before), so callers arriving while a
// sync runs wait for it to end and share the next one. Serialised, each
// caller synced the packs in turn: 16 FLUSHes at once waited for 16
// fdatasyncs one after the other, where two suffice.
type syncGroup struct {
	mu   sync.Mutex
	cur  *syncRound // running
	next *syncRound // starts when cur ends; its callers wait
}

type syncRound struct {
	done   chan struct{}
	err    error // set before done is closed
	joined int   // callers waiting for it (under syncGroup.mu)
}

// do returns the result of a run of sync that started after do was
// called: a new run when none is under way, else the one after it.
func (g *syncGroup) do(sync func() error) error {
	g.mu.Lock()
	if g.cur == nil {
		r := &syncRound{done: make(chan struct{})}
		g.cur = r
		g.mu.Unlock()
		g.run(r, sync)
		return r.err
	}
	r := g.next
	if r == nil {
		r = &syncRound{done: make(chan struct{})}
		g.next = r
	}
	r.joined++
	g.mu.Unlock()
	<-r.done
	return r.err
}

// run runs round r, then starts the round that waited for it, if any.
func (g *syncGroup) run(r *syncRound, sync func() error) {
	r.err = sync()
	g.mu.Lock()
	n := g.next
	g.cur, g.next = n, nil
	g.mu.Unlock()
	close(r.done)
	if n != nil {
		go g.run(n, sync)
	}
}
