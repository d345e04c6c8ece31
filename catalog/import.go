package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rewind-dev/rewind/timeline"
)

// MaxAtAhead is how far ahead of the clock import --at may stamp a
// version: enough for clocks a little apart, not enough to move the
// store's clock.
const MaxAtAhead = time.Minute

// Import records a raw image or block device as a new version of a volume.
func (s *Service) Import(ctx context.Context, r ImportRequest, progress ProgressFunc) (*ImportResult, error) {
	if err := CheckVolumeName(r.Volume); err != nil {
		return nil, err
	}
	var at int64
	if r.At != "" {
		w, err := ParseWhen(r.At, s.now())
		if err != nil {
			return nil, fmt.Errorf("--at: %w", err)
		}
		if w.Kind != WhenTime {
			return nil, errorf(ErrBadWhen, "--at %s: give a time, not a label", r.At)
		}
		// Every later version is stamped after the newest one, so a
		// stamp in the future would drag the store's clock along.
		if now := s.now(); w.Time > now.Add(MaxAtAhead).UnixNano() {
			return nil, errorf(ErrBadWhen, "--at %s is in the future (the clock reads %s); give a time at most a minute ahead",
				r.At, Time(now.UnixNano()))
		}
		at = w.Time
	}
	// A protected volume's versions come from writes to its primary
	// only: an import would give it one the primary does not hold.
	if v, err := s.tl.Volume(r.Volume); err == nil && v.Kind == timeline.KindProtected {
		return nil, errorf(ErrConflict, "%s is a protected volume: its versions come only from writes to its primary; import into another name, or clone it", r.Volume)
	}
	if v, err := s.tl.Volume(r.Volume); err == nil {
		if err := s.replicaOf(v); err != nil {
			return nil, err
		}
	}
	// The block size of an existing volume is fixed; say so only when a
	// different one is asked for.
	if v, err := s.tl.Volume(r.Volume); err == nil && r.BlockSize != 0 && v.BlockSize != r.BlockSize {
		return nil, errorf(ErrInvalid, "%s has block size %d; --block-size applies only when a volume is created", r.Volume, v.BlockSize)
	}
	if v, err := s.tl.Volume(r.Volume); err == nil && at != 0 && at <= v.Last {
		return nil, errorf(ErrConflict, "%s already has a version at %s; --at must be later", r.Volume, Time(v.Last))
	}
	o := timeline.ImportOptions{Name: r.Volume, At: at, BlockSize: r.BlockSize, Progress: progress}
	var read *countingReader
	switch {
	case r.File == nil && r.Stream == nil && IsNBDURI(r.Source):
		conn, err := s.openNBDSource(ctx, r, &o)
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		read = &countingReader{r: conn}
		o.Source = read
	case r.DirtyBitmap != "":
		return nil, errorf(ErrInvalid, "--dirty-bitmap reads from an nbd:// source, not from %s", r.Source)
	case r.File != nil:
		size, err := sourceSize(r.File, r.Source)
		if err != nil {
			return nil, err
		}
		o.Source, o.Size, o.Data = r.File, size, dataRanges(r.File, size)
	case r.Stream != nil && r.Size > 0:
		o.Source, o.Size = newStreamSource(r.Stream), r.Size
	case r.Stream != nil:
		return nil, errorf(ErrInvalid, "import of %s: a stream needs its size in bytes (Content-Length)", r.Source)
	default:
		return nil, errorf(ErrInvalid, "import of %s: no open source was passed; the caller opens it (OpenSource)", r.Source)
	}
	size := o.Size
	start := time.Now()
	res, err := s.tl.Import(ctx, o)
	switch {
	case errors.Is(err, timeline.ErrExists):
		return nil, errorf(ErrExists, "%s is being created by another command; import again once it is done", r.Volume)
	case errors.Is(err, timeline.ErrTooOld):
		return nil, errorf(ErrConflict, "%s was given a newer version meanwhile; --at must be later", r.Volume)
	case isNoSpace(err):
		return nil, s.noSpace(dataBytes(o.Data, size))
	case err != nil:
		return nil, fmt.Errorf("import %s into %s: %w", r.Source, r.Volume, err)
	}
	out := &ImportResult{Volume: r.Volume, Time: Time(res.Time), Created: res.Created, Size: size,
		Blocks: res.Blocks, Bytes: res.Bytes, Stored: res.Stored, Duration: time.Since(start), Read: size}
	if read != nil {
		out.Read = read.n.Load()
	} else if o.Data != nil {
		out.Read = dataBytes(o.Data, size)
	}
	return out, nil
}

// OpenSource opens a raw image file or a block device for reading, with
// the rights of the calling process. The CLI opens the source itself and
// hands the file to Import, in-process or over the daemon's socket.
func OpenSource(path string) (*os.File, error) {
	if IsNBDURI(path) {
		return nil, errorf(ErrInvalid, "%s is an NBD URI: the import dials it, there is no file to open", path)
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errorf(ErrNotFound, "source %s does not exist", path)
		}
		return nil, errorf(ErrInvalid, "open source: %v", err)
	}
	if _, err := sourceSize(f, path); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// sourceSize checks that f is a non-empty regular file or block device
// and returns its size; name is for messages.
func sourceSize(f *os.File, name string) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	var size int64
	switch {
	case st.Mode().IsRegular():
		size = st.Size()
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		// Seek moves the offset that the caller shares; reads are ReadAt.
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			return 0, fmt.Errorf("size of %s: %w", name, err)
		}
	default:
		return 0, errorf(ErrInvalid, "source %s is not a regular file or a block device", name)
	}
	if size == 0 {
		return 0, errorf(ErrInvalid, "source %s is empty", name)
	}
	return size, nil
}

// dataRanges lists where a sparse file holds data (SEEK_DATA/SEEK_HOLE),
// so an import skips its holes without reading them. It returns nil (read
// everything) for block devices and filesystems without the calls.
func dataRanges(f *os.File, size int64) []timeline.Range {
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return nil
	}
	fd := int(f.Fd())
	out := []timeline.Range{}
	for off := int64(0); off < size; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after off
		}
		if err != nil {
			return nil
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return nil
		}
		out = append(out, timeline.Range{Offset: start, Length: end - start})
		off = end
	}
	return out
}
