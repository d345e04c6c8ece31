package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rewind-dev/rewind/blockstore/objstore"
	"github.com/rewind-dev/rewind/blockstore/remote"
	"github.com/rewind-dev/rewind/timeline"
)

// Replication to a second site (`rewind replicate`): the target is a
// repository of its own, in the layout of blockstore/remote, that
// `rewind --store TARGET` serves like any other. A run takes a snapshot
// of the index (a Pebble checkpoint), keeps in it only the volumes asked
// for and marks them replicas, copies the packs the target lacks, then
// the snapshot's files: the target's index changes only once every pack
// it references is there, and a run that ends early (killed, cancelled,
// out of its window) leaves the previous one in place.
//
// What a run sent is journalled in DATA/replicate, so that the next run
// does not send it again; the target's lease is held for the run.

// replicaKey marks a volume as a replica of another site: its versions
// come from replication, and it takes no writes here. Part of the
// on-disk format:
//
//	'k' | "replica" | vol u64 -> ReplicaInfo (JSON)
func replicaKey(vol uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte{tagHousekeeping}, "replica"...), vol)
}

// ReplicaInfo says where a replicated volume comes from.
type ReplicaInfo struct {
	From     string `json:"from"` // the source's data directory and host
	Snapshot Time   `json:"snapshot"`
}

// replicaOf returns a conflict error when v is a replica of another site.
func (s *Service) replicaOf(v *timeline.Volume) error {
	var ri ReplicaInfo
	if !s.getJSON(replicaKey(v.ID), &ri) {
		return nil
	}
	return errorf(ErrConflict, "%s is a replica of another site (%s, as of %s): it takes no writes here; write at the source, or clone it", v.Name, ri.From, ri.Snapshot)
}

// ReplicateRequest is `rewind replicate`.
type ReplicateRequest struct {
	To       string   `json:"to"`
	Endpoint string   `json:"endpoint,omitempty"`
	Volumes  []string `json:"volumes,omitempty"`
	BWLimit  int64    `json:"bwlimit,omitempty"` // bytes per second; 0: none
	Window   string   `json:"window,omitempty"`  // HH:MM-HH:MM, local time
}

// ReplicateResult says what a run sent.
type ReplicateResult struct {
	To       string   `json:"to"`
	Volumes  []string `json:"volumes"`
	Snapshot Time     `json:"snapshot"`
	// Complete: the target serves the snapshot. A run that ends at its
	// window's end is not, and says so in Stopped; the next resumes.
	Complete bool   `json:"complete"`
	Stopped  string `json:"stopped,omitempty"`
	remote.ReplicateStats
	Seconds float64 `json:"seconds"`
	// LagSeconds is how far the target is behind now: the age of the
	// newest snapshot that fully arrived (-1: none yet).
	LagSeconds float64 `json:"lag_seconds"`
}

// errWindowClosed ends the copy of a run whose window closed.
var errWindowClosed = errors.New("the replication window closed")

// replState is what a data directory remembers of one target.
type replState struct {
	To       string `json:"to"`
	Repo     string `json:"repo"`
	Snapshot Time   `json:"snapshot"` // of the newest complete run
}

func (s *Service) replDir() string { return filepath.Join(s.dir, "replicate") }

func (s *Service) replStatePath(to string) string {
	h := sha256.Sum256([]byte(to))
	return filepath.Join(s.replDir(), "target-"+hex.EncodeToString(h[:6])+".json")
}

// LastReplicated returns the snapshot time of the newest run to target to
// that completed.
func (s *Service) LastReplicated(to string) (time.Time, bool) {
	var st replState
	b, err := os.ReadFile(s.replStatePath(to))
	if err != nil || json.Unmarshal(b, &st) != nil || st.Snapshot == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, int64(st.Snapshot)), true
}

// replicaID is the data directory's id as a replication source (the
// holder of the target's lease).
func (s *Service) replicaID() (string, error) {
	p := filepath.Join(s.replDir(), "id")
	if b, err := os.ReadFile(p); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err := os.MkdirAll(s.replDir(), 0o750); err != nil {
		return "", err
	}
	id := remote.NewID()
	return id, os.WriteFile(p, []byte(id+"\n"), 0o640)
}

// Replicate copies the store (or the named volumes, with the clones'
// parents) to r.To; see the comment at the top of this file.
func (s *Service) Replicate(ctx context.Context, r ReplicateRequest, progress ProgressFunc) (*ReplicateResult, error) {
	start := s.now()
	if r.To == "" {
		return nil, errorf(ErrInvalid, "replicate: give the target with --to s3://BUCKET[/PREFIX] or a directory")
	}
	win, err := ParseWindow(r.Window)
	if err != nil {
		return nil, err
	}
	if !win.Open(start) {
		return nil, errorf(ErrConflict, "outside the replication window %s: it opens at %s", win, win.Next(start).Format("15:04"))
	}
	if r.BWLimit < 0 {
		return nil, errorf(ErrInvalid, "--bwlimit cannot be negative")
	}
	for _, v := range r.Volumes {
		if _, err := s.volume(v); err != nil {
			return nil, err
		}
	}
	if err := s.checkTarget(r.To); err != nil {
		return nil, err
	}
	// The snapshot is a Pebble checkpoint, which an index opened
	// read-only cannot make.
	if werr := s.tl.Writable(); werr != nil {
		return nil, errorf(ErrConflict, "a replication snapshots the index, which a store that takes no writes cannot do (%v): open it without --read-only, or free space", werr)
	}
	// One at a time: a second waits for the first.
	select {
	case s.replicating <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.replicating }()

	target, err := objstore.Open(ctx, r.To, objstore.Options{Endpoint: r.Endpoint})
	if err != nil {
		return nil, fmt.Errorf("replicate to %s: %w", r.To, err)
	}
	repo, _, err := remote.OpenRepo(target, true, s.log)
	if err != nil {
		return nil, fmt.Errorf("replicate to %s: %w", r.To, err)
	}
	id, err := s.replicaID()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	lease, err := remote.AcquireLease(target, "replicate-"+id, s.dir, false, s.log, func(err error) { cancel(err) })
	if errors.Is(err, remote.ErrLeaseHeld) {
		return nil, errorf(ErrConflict, "%s is being written by a data directory that holds its lease (a rewind serve on it without --read-only?): stop that, or serve the target with --read-only, and replicate again", r.To)
	}
	if err != nil {
		return nil, fmt.Errorf("replicate to %s: %w", r.To, err)
	}
	defer lease.Release()
	journal, err := remote.OpenJournal(filepath.Join(s.replDir(), repo.ID+".journal"))
	if err != nil {
		return nil, err
	}
	defer journal.Close()

	// No pack goes while the snapshot's packs are copied.
	release := sync.OnceFunc(s.chunks.HoldGC())
	defer release()
	snapTime := s.now()
	snap, kept, fromSource, err := s.replicaSnapshot(r.Volumes, Time(snapTime.UnixNano()))
	if snap != "" {
		defer os.RemoveAll(snap)
	}
	if err != nil {
		return nil, err
	}
	packs, err := s.replicaPacks()
	if err != nil {
		return nil, err
	}
	rep, err := remote.NewReplicator(ctx, remote.ReplicateOptions{Target: target, Journal: journal, Limit: remote.NewBucket(r.BWLimit), Lease: lease,
		Logger: s.log, Progress: progress, Stop: func() error {
			if !win.Open(s.now()) {
				return errWindowClosed
			}
			return nil
		}})
	if err != nil {
		return nil, err
	}
	res := &ReplicateResult{To: r.To, Volumes: kept, Snapshot: Time(snapTime.UnixNano()), LagSeconds: -1}
	finish := func() *ReplicateResult {
		res.ReplicateStats = rep.Stats()
		res.Seconds = s.now().Sub(start).Seconds()
		if t, ok := s.LastReplicated(r.To); ok {
			res.LagSeconds = s.now().Sub(t).Seconds()
		}
		return res
	}
	err = rep.CopyPacks(ctx, packs)
	release()
	if err == nil {
		err = rep.CopyIndex(ctx, filepath.Join(snap, "index"), fromSource)
	}
	if errors.Is(err, errWindowClosed) {
		res.Stopped = fmt.Sprintf("the window %s closed; the next run resumes where this one stopped", win)
		return finish(), nil
	}
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			err = cause // the lease was taken
		}
		return nil, fmt.Errorf("replicate to %s: %w", r.To, err)
	}
	// The target now serves the snapshot: what it held besides goes, and
	// a data directory that served the target brings its index down anew.
	keep := map[string]bool{}
	for _, p := range packs {
		keep[p.Name] = true
	}
	if err := rep.DropPacksExcept(keep); err != nil {
		s.log.Warn("packs the target no longer needs could not be deleted; the next run tries again", "to", r.To, "err", err)
	}
	if err := rep.Forget(); err != nil {
		return nil, err
	}
	if err := putObject(target, writerObject, []byte("replicate-"+id)); err != nil {
		return nil, err
	}
	st, _ := json.Marshal(replState{To: r.To, Repo: repo.ID, Snapshot: res.Snapshot})
	if err := WriteFileDurably(s.replStatePath(r.To), st, 0o640); err != nil {
		return nil, err
	}
	res.Complete = true
	return finish(), nil
}

// checkTarget refuses the store's own location as a target.
func (s *Service) checkTarget(to string) error {
	abs := func(u string) string {
		if strings.Contains(u, "://") && !strings.HasPrefix(u, "file://") {
			return strings.TrimSuffix(u, "/")
		}
		a, _ := filepath.Abs(strings.TrimPrefix(u, "file://"))
		return a
	}
	t := abs(to)
	if s.remote != nil && abs(s.remote.url) == t {
		return errorf(ErrInvalid, "%s is this data directory's own store; replicate to another bucket, prefix or directory", to)
	}
	if d, _ := filepath.Abs(s.dir); t == d || strings.HasPrefix(t, d+string(filepath.Separator)) {
		return errorf(ErrInvalid, "%s is inside the data directory %s; replicate to a place of its own", to, s.dir)
	}
	return nil
}

// replicaSnapshot checkpoints the index under DATA/replicate, keeps the
// named volumes only (all with none), and marks those kept replicas. It
// returns the snapshot's directory (its index in index/) and the volumes
// kept, and the files the source's index made (the rest the snapshot
// made itself).
func (s *Service) replicaSnapshot(volumes []string, at Time) (string, []string, map[string]bool, error) {
	if err := os.MkdirAll(s.replDir(), 0o750); err != nil {
		return "", nil, nil, err
	}
	// Snapshots a killed run left.
	if old, _ := filepath.Glob(filepath.Join(s.replDir(), "snap-*")); len(old) > 0 {
		for _, o := range old {
			os.RemoveAll(o)
		}
	}
	dir, err := os.MkdirTemp(s.replDir(), "snap-")
	if err != nil {
		return "", nil, nil, err
	}
	index := filepath.Join(dir, "index")
	// What the memtable holds goes into a table of the source's, which
	// the next run finds on the target.
	if err := s.flushIndex(); err != nil {
		s.log.Warn("the index could not be written out before its snapshot; its log is sent instead", "err", err)
	}
	if err := s.db.Checkpoint(index, pebble.WithFlushedWAL()); err != nil {
		return dir, nil, nil, fmt.Errorf("snapshot the index: %w", err)
	}
	fromSource := map[string]bool{}
	ents, err := os.ReadDir(index)
	if err != nil {
		return dir, nil, nil, err
	}
	for _, e := range ents {
		fromSource[e.Name()] = true
	}
	o := timeline.PebbleOptions(vfs.Default, s.log)
	o.DisableAutomaticCompactions = true
	db, err := pebble.Open(index, o)
	if err != nil {
		return dir, nil, nil, fmt.Errorf("open the snapshot of the index: %w", err)
	}
	kept, dropped, err := timeline.KeepVolumes(db, volumes)
	if err == nil {
		err = dropCatalogKeys(db, dropped)
	}
	host, _ := os.Hostname()
	from := s.dir
	if host != "" {
		from = host + ":" + s.dir
	}
	names := []string{}
	if err == nil {
		b := db.NewBatch()
		for _, v := range kept {
			names = append(names, v.Name)
			val, _ := json.Marshal(ReplicaInfo{From: from, Snapshot: at})
			b.Set(replicaKey(v.ID), val, nil)
		}
		err = b.Commit(pebble.NoSync)
		b.Close()
	}
	if err == nil {
		err = db.Flush()
	}
	err = errors.Join(err, db.Close())
	if err != nil {
		return dir, nil, nil, fmt.Errorf("prepare the snapshot of the index: %w", err)
	}
	sort.Strings(names)
	return dir, names, fromSource, nil
}

// dropCatalogKeys deletes the catalog's records of volumes a snapshot
// does not keep: their labels, retention, last prune and replica marks.
func dropCatalogKeys(db *pebble.DB, dropped []*timeline.Volume) error {
	b := db.NewBatch()
	defer b.Close()
	for _, v := range dropped {
		lo := binary.BigEndian.AppendUint64([]byte{tagPoint}, v.ID)
		hi := binary.BigEndian.AppendUint64([]byte{tagPoint}, v.ID+1)
		if err := b.DeleteRange(lo, hi, nil); err != nil {
			return err
		}
		for _, k := range [][]byte{retentionKey(v.ID), lastPruneKey(v.ID), replicaKey(v.ID)} {
			if err := b.Delete(k, nil); err != nil {
				return err
			}
		}
	}
	return b.Commit(pebble.NoSync)
}

// replicaPacks lists the packs a snapshot taken now can reference: every
// pack there is. The newest, and one not yet sealed into the object
// store, may still change.
func (s *Service) replicaPacks() ([]remote.PackSource, error) {
	dir := filepath.Join(s.dir, "packs")
	names, err := s.packsFS.List(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	sort.Strings(names)
	newest := ""
	for _, n := range names {
		if strings.HasSuffix(n, ".pack") {
			newest = n
		}
	}
	var out []remote.PackSource
	for _, n := range names {
		if !strings.HasSuffix(n, ".pack") {
			continue
		}
		path := filepath.Join(dir, n)
		fi, err := s.packsFS.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("pack %s: %w", n, err)
		}
		mutable := n == newest
		if s.remote != nil && !s.remote.packs.IsRemote(path) {
			mutable = true // not sealed yet
		}
		out = append(out, remote.PackSource{Name: n, Size: fi.Size(), R: &packReader{fs: s.packsFS, path: path}, Mutable: mutable})
	}
	return out, nil
}

// packReader opens a pack at its first read.
type packReader struct {
	fs   vfs.FS
	path string
	f    vfs.File
}

func (p *packReader) ReadAt(b []byte, off int64) (int, error) {
	if p.f == nil {
		f, err := p.fs.Open(p.path)
		if errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("pack %s went during the replication (an import that failed gave its space back?): %w; run again", filepath.Base(p.path), err)
		}
		if err != nil {
			return 0, err
		}
		p.f = f
	}
	return p.f.ReadAt(b, off)
}

func (p *packReader) Close() error {
	if p.f == nil {
		return nil
	}
	err := p.f.Close()
	p.f = nil
	return err
}
