package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rewind-dev/rewind/blockstore/objstore"
	"github.com/rewind-dev/rewind/blockstore/remote"
)

// storeFile, in a data directory, remembers the object store it works
// for and the directory's own id (the lease's holder).
const storeFile = "store.json"

// writerObject names, in the repository, the data directory that last
// held its lease: any other directory's copy of the index is behind.
const writerObject = "writer"

type storeConfig struct {
	URL string `json:"url"`
	ID  string `json:"id"`
}

// remoteStore is what a Service on an object store holds open.
type remoteStore struct {
	url     string
	backend objstore.Backend
	lease   *remote.Lease // nil for a reader
	mu      sync.Mutex    // guards the two below against a lost lease
	mirror  *remote.Mirror
	packs   *remote.Packs
}

// openRemote prepares a data directory for a store in an object store:
// it returns nil (and nothing to do) for a store kept in the directory.
// It refuses a --store that differs from the one the directory
// remembers, takes the writer's lease, and brings the index down from the
// repository when the directory has none, or one behind the repository's.
func openRemote(o Options, onLost func(error)) (r *remoteStore, err error) {
	cfgPath := filepath.Join(o.Dir, storeFile)
	var cfg storeConfig
	if b, err := os.ReadFile(cfgPath); err == nil {
		if err := json.Unmarshal(b, &cfg); err != nil || cfg.URL == "" {
			return nil, fmt.Errorf("%s is unreadable; move it away to open %s as a store of its own", cfgPath, o.Dir)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	url := o.Store
	switch {
	case url == "" && cfg.URL == "":
		return nil, nil
	case url == "":
		url = cfg.URL
	case cfg.URL != "" && cfg.URL != url:
		return nil, errorf(ErrInvalid, "%s works for the store %s, not %s; give that --store, or another --data for another store", o.Dir, cfg.URL, url)
	case cfg.URL == "" && hasFiles(filepath.Join(o.Dir, "index")):
		return nil, errorf(ErrInvalid, "%s holds a store of its own (its packs are in the directory); give --store only with a new, empty data directory", o.Dir)
	}
	b, err := objstore.Open(context.Background(), url, objstore.Options{ReadOnly: o.ReadOnly})
	if err != nil {
		return nil, err
	}
	cfg.URL = url
	if cfg.ID == "" {
		cfg.ID = remote.NewID()
	}
	if _, _, err := remote.OpenRepo(b, !o.ReadOnly, o.Logger); err != nil {
		return nil, err
	}
	r = &remoteStore{url: url, backend: b}
	lost := func(err error) {
		// Nothing more goes up: the other writer's objects are its own.
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.mirror != nil {
			r.mirror.Fence(err)
		}
		if r.packs != nil {
			r.packs.Fence(err)
		}
		onLost(err)
	}
	index := filepath.Join(o.Dir, "index")
	fresh := o.ReadOnly // a reader takes the repository's index as it is now
	if !o.ReadOnly {
		if r.lease, err = remote.AcquireLease(b, cfg.ID, o.Dir, o.TakeOver, o.Logger, lost); err != nil {
			return nil, err
		}
		last, err := b.GetRange(context.Background(), writerObject, 0, -1)
		switch {
		case errors.Is(err, objstore.ErrNotExist):
		case err != nil:
			r.close()
			return nil, fmt.Errorf("read %s: %w", writerObject, err)
		case string(last) != cfg.ID:
			fresh = true // another directory wrote the repository since
		}
		if err := putObject(b, writerObject, []byte(cfg.ID)); err != nil {
			r.close()
			return nil, err
		}
	}
	if fresh || !hasFiles(index) {
		for _, d := range []string{index, filepath.Join(o.Dir, "packs")} {
			if err := os.RemoveAll(d); err != nil {
				r.close()
				return nil, err
			}
		}
		if err := restoreIndex(b, index, o.Logger, o.OnRestore); err != nil {
			r.close()
			return nil, err
		}
	}
	data, _ := json.Marshal(cfg)
	if err := os.WriteFile(cfgPath, data, 0o640); err != nil {
		r.close()
		return nil, err
	}
	mirror, err := remote.NewMirror(remote.MirrorOptions{FS: o.FS, Dir: index, Backend: b, Logger: o.Logger, ReadOnly: o.ReadOnly, Lease: r.lease})
	if err != nil {
		r.close()
		return nil, err
	}
	r.mu.Lock()
	r.mirror = mirror
	r.mu.Unlock()
	cacheBytes := o.StoreCacheBytes
	if cacheBytes == 0 {
		cacheBytes = remote.DefaultCacheBytes
	}
	packs, err := remote.NewPacks(remote.PacksOptions{FS: o.FS, Dir: filepath.Join(o.Dir, "packs"), CacheDir: filepath.Join(o.Dir, "cache"),
		CacheBytes: cacheBytes, Backend: b, Logger: o.Logger, ReadOnly: o.ReadOnly, Lease: r.lease})
	if err != nil {
		r.close()
		return nil, err
	}
	r.mu.Lock()
	r.packs = packs
	r.mu.Unlock()
	return r, nil
}

// restoreIndex downloads the repository's index.
func restoreIndex(b objstore.Backend, dir string, log *slog.Logger, progress func(done, total int64)) error {
	start := time.Now()
	n, err := remote.Restore(b, vfs.Default, dir, log, progress)
	if err != nil {
		return fmt.Errorf("bring the index down from %s: %w", b, err)
	}
	if n > 0 {
		log.Info("index brought down from the object store", "store", b.String(), "files", n, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

func putObject(b objstore.Backend, name string, data []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := b.Put(ctx, name, bytes.NewReader(data), int64(len(data))); err != nil {
		return fmt.Errorf("write %s to %s: %w", name, b, err)
	}
	return nil
}

func hasFiles(dir string) bool {
	names, err := os.ReadDir(dir)
	return err == nil && len(names) > 0
}

// close releases what openRemote took; the Service's Close calls it last.
func (r *remoteStore) close() error {
	if r == nil {
		return nil
	}
	if r.packs != nil {
		r.packs.Close()
	}
	if r.lease != nil {
		return r.lease.Release()
	}
	return nil
}

// StoreInfo says where a store keeps its packs.
type StoreInfo struct {
	URL        string `json:"url,omitempty"` // "" for a store kept in the data directory
	CacheBytes int64  `json:"cache_bytes"`   // of pack blocks held locally
	ReadOnly   bool   `json:"read_only,omitempty"`
}

// Store says where the store keeps its packs.
func (s *Service) Store() StoreInfo {
	if s.remote == nil {
		return StoreInfo{}
	}
	return StoreInfo{URL: s.remote.url, CacheBytes: s.remote.packs.CacheBytes(), ReadOnly: s.remote.lease == nil}
}
