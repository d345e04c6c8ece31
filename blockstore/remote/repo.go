package remote

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/rewind-dev/rewind/blockstore/objstore"
)

const repoName = "rewind.repo"

// RepoFormat is the layout version of a repository in an object store.
const RepoFormat = 1

// Repo describes a repository: the object rewind.repo at the root.
type Repo struct {
	Format  int       `json:"format"`
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
}

// ErrNotRepo is returned (wrapped) for a location that holds objects but
// no repository.
var ErrNotRepo = errors.New("not a rewind repository")

// OpenRepo reads the repository at b; with create, an empty location
// becomes one. It reports whether the repository was created. Calls that
// fail and are retried are logged to log.
func OpenRepo(b objstore.Backend, create bool, log *slog.Logger) (Repo, bool, error) {
	c := newConn(b, log, 30*time.Second, false)
	data, err := c.get(repoName, 0, -1)
	if err == nil {
		var r Repo
		if err := json.Unmarshal(data, &r); err != nil || r.ID == "" {
			return Repo{}, false, fmt.Errorf("%s: %w: %s is unreadable", b, ErrNotRepo, repoName)
		}
		if r.Format != RepoFormat {
			return Repo{}, false, fmt.Errorf("%s: repository format %d, this build reads %d", b, r.Format, RepoFormat)
		}
		return r, false, nil
	}
	if !errors.Is(err, objstore.ErrNotExist) {
		return Repo{}, false, err
	}
	if !create {
		return Repo{}, false, fmt.Errorf("%s: %w (no %s)", b, ErrNotRepo, repoName)
	}
	objs, err := c.list("")
	if err != nil {
		return Repo{}, false, err
	}
	if len(objs) > 0 {
		return Repo{}, false, fmt.Errorf("%s: %w: it holds %d other objects; give an empty bucket or prefix", b, ErrNotRepo, len(objs))
	}
	r := Repo{Format: RepoFormat, ID: NewID(), Created: time.Now().UTC()}
	data, _ = json.Marshal(r)
	if err := c.put(repoName, data); err != nil {
		return Repo{}, false, err
	}
	return r, true, nil
}

// NewID returns a random identifier.
func NewID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
