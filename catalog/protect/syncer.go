package protect

import "sync"

// syncer shares the primary's fdatasync among the FLUSHes that wait for
// it at once: a FLUSH that comes while one runs cannot count on it (it
// may have started before the FLUSH's writes were acknowledged), so it
// waits for the next, which one of the waiting callers runs for all of
// them. fio at queue depth 32 with a FLUSH every 16 writes sends one for
// every two writes or so; each ran its own fdatasync, on the disk the
// timeline syncs its packs and log on too.
type syncer struct {
	mu      sync.Mutex
	cond    *sync.Cond
	running bool
	started uint64 // syncs started so far
	done    uint64 // the newest sync that ended
	// failed is the newest sync that failed, with its error: a caller
	// whose sync, or a later one, failed gets the error even when a
	// later sync succeeded (the failed one may have lost its pages).
	failed    uint64
	failedErr error
}

// sync returns once f ran, start to end, after sync was called: by this
// caller or another.
func (s *syncer) sync(f func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cond == nil {
		s.cond = sync.NewCond(&s.mu)
	}
	want := s.started + 1 // the first that starts from now on
	for s.done < want {
		if s.running {
			s.cond.Wait()
			continue
		}
		s.running = true
		s.started++
		gen := s.started
		s.mu.Unlock()
		err := f()
		s.mu.Lock()
		s.running = false
		s.done = gen
		if err != nil {
			s.failed, s.failedErr = gen, err
		}
		s.cond.Broadcast()
	}
	if s.failed >= want {
		return s.failedErr
	}
	return nil
}
