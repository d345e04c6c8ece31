package catalog

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rewind-dev/rewind/timeline"
)

// ErrNoSpace: the data directory's filesystem is full. Errors of this
// class also match syscall.ENOSPC.
var ErrNoSpace error = noSpaceClass{}

type noSpaceClass struct{}

func (noSpaceClass) Error() string        { return "no space left" }
func (noSpaceClass) Is(target error) bool { return target == syscall.ENOSPC }

// isNoSpace reports whether err comes from a full filesystem.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// noSpace is the one-line error of an import that did not fit: how much
// more space it would need, about, given the bytes of the source that
// hold data.
func (s *Service) noSpace(dataBytes int64) error {
	free := int64(-1)
	if du, err := s.fs.GetDiskUsage(s.dir); err == nil {
		free = int64(du.AvailBytes)
	}
	need := dataBytes + timeline.DefaultReserveBytes - free
	if free < 0 || need < 1<<20 {
		return errorf(ErrNoSpace, "no space left on %s; free some space there, or import into a data directory on a larger filesystem (--data)", s.dir)
	}
	return errorf(ErrNoSpace, "no space left on %s (needs about %d MiB more); free some space there, or use --data on a larger filesystem", s.dir, (need+1<<20-1)>>20)
}

// unwritableNote says why the store takes no writes, or "".
func (s *Service) unwritableNote() string {
	err := s.tl.Writable()
	if err == nil {
		return ""
	}
	if isNoSpace(err) {
		return fmt.Sprintf("no space left on %s: the store takes no writes; free space and restart rewind", s.dir)
	}
	return fmt.Sprintf("the store takes no writes (%v); restart rewind", err)
}

var _ vfs.FS = (*timeline.Guard)(nil)

// dataBytes is how many bytes of a source of size hold data, given its
// data ranges (nil: all of it).
func dataBytes(data []timeline.Range, size int64) int64 {
	if data == nil {
		return size
	}
	var n int64
	for _, r := range data {
		n += r.Length
	}
	return n
}
