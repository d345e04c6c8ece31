package protect

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/rewind-dev/rewind/catalog"
)

// Primary kinds.
const (
	KindFile   = "file"
	KindDevice = "device"
)

// primary is the production disk: a file or block device, locked.
type primary struct {
	f              *os.File
	path           string
	kind           string
	dev, ino, rdev uint64
	size           int64 // of the file or device (the volume may be smaller)
}

// lockPrimary takes the file or device the caller opened (read-write),
// checks what it is, and locks it (flock) so that no second protection,
// in this or another daemon, writes it. A file that another program
// holds an OFD lock on (QEMU locks its images so) is in use too.
func lockPrimary(f *os.File, path string) (*primary, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("primary %s: %w", path, err)
	}
	p := &primary{f: f, path: path}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		p.kind, p.dev, p.ino, p.size = KindFile, uint64(st.Dev), st.Ino, st.Size
	case unix.S_IFBLK:
		p.kind, p.rdev = KindDevice, uint64(st.Rdev)
		size, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			return nil, fmt.Errorf("size of %s: %w", path, err)
		}
		p.size = size
	default:
		return nil, catalog.Errorf(catalog.ErrInvalid, "primary %s is neither a file nor a block device; give the production disk's image file or device", path)
	}
	inUse := catalog.Errorf(catalog.ErrConflict, "primary %s is in use (another protection, or a program that locks it such as QEMU); stop that user or choose another disk", path)
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, inUse
		}
		return nil, fmt.Errorf("lock primary %s: %w", path, err)
	}
	// An OFD write lock over the whole file as well: QEMU, which takes
	// OFD locks on the images it opens, refuses to open it while it is
	// protected, and one that holds it already makes it in use here.
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return nil, inUse
		}
		return nil, fmt.Errorf("lock primary %s: %w", path, err)
	}
	return p, nil
}

// reopenPrimary opens a protection's primary again after a restart and
// checks that the path still names the file or device the caller passed.
func reopenPrimary(r *record) (*primary, error) {
	flags := os.O_RDWR | unix.O_NOFOLLOW
	if r.Kind == KindDevice {
		flags = os.O_RDWR | os.O_EXCL
	}
	f, err := os.OpenFile(r.Primary, flags, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen primary: %w", err)
	}
	p, err := lockPrimary(f, r.Primary)
	if err != nil {
		f.Close()
		return nil, err
	}
	if p.kind != r.Kind || p.dev != r.Dev || p.ino != r.Ino || p.rdev != r.Rdev {
		p.close()
		return nil, fmt.Errorf("primary %s is no longer the %s protection started with", r.Primary, r.Kind)
	}
	if p.size < r.Size {
		p.close()
		return nil, fmt.Errorf("primary %s has %d bytes, the protected volume %d", r.Primary, p.size, r.Size)
	}
	return p, nil
}

// close unlocks and closes the primary.
func (p *primary) close() error {
	if p == nil || p.f == nil {
		return nil
	}
	err := p.f.Close() // the lock goes with the last descriptor
	p.f = nil
	return err
}

// zero makes [off, off+n) read as zeroes: a hole punched where the file
// system or device can, zeroes written where it cannot.
func (p *primary) zero(off, n int64) error {
	err := unix.Fallocate(int(p.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("zero %s at %d+%d: %w", p.path, off, n, err)
	}
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := p.f.WriteAt(buf[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// dataRanges lists where a file holds data within [off, off+n)
// (SEEK_DATA/SEEK_HOLE); ok is false for a device or a file system
// without the calls: then all of it counts as data.
func (p *primary) dataRanges(off, n int64) (ranges [][2]int64, ok bool) {
	if p.kind != KindFile {
		return nil, false
	}
	fd := int(p.f.Fd())
	end := off + n
	for at := off; at < end; {
		start, err := unix.Seek(fd, at, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return nil, false
		}
		if start >= end {
			break
		}
		stop, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return nil, false
		}
		ranges = append(ranges, [2]int64{start, min(stop, end)})
		at = stop
	}
	return ranges, true
}
