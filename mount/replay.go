package mount

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
)

// Filesystem is one filesystem candidate of an image, as Replay hands it
// over: the whole disk, or one partition.
type Filesystem struct {
	Part   string // "p1", "p5", ...; empty for a filesystem on the whole disk
	Offset int64  // bytes from the start of the disk
	Size   int64
	// Type is what identify recognised: "ext4" (the ext2/3/4 family),
	// "xfs", "btrfs", "vfat", "ntfs3", "iso9660"; empty when nothing is.
	Type string
	// Note says what the area holds when it is no filesystem (swap, LVM,
	// LUKS), or why it was not attached or its journal not replayed.
	Note string
	// Device is the loop device holding the filesystem, unmounted, its
	// journal replayed into the overlay; empty when not attached. Writes
	// to it land in the throwaway overlay.
	Device string
}

// Replay shows each filesystem of img (the whole disk, or each partition
// of a GPT or MBR disk) to fn as the system would have seen it after a
// crash at that instant, the way MountFiles does: img is served as a
// throwaway copy-on-write overlay from a private FUSE mount under
// Options.StateDir; each filesystem whose type attach accepts is attached
// to a loop device over that overlay and mounted read-only, which replays
// its journal into the overlay, and unmounted again. fn then gets the
// loop device (a checker may read it); the rest get a Filesystem without
// Device, saying what they are. A filesystem whose replay mount fails is
// still handed over attached, with Note saying why (a checker judges it
// as it is).
//
// fn is called once per candidate, in disk order, one at a time. The loop
// device is detached after fn returns, and the overlay is gone when Replay
// returns; every step is in the state file, so CleanupStale undoes what a
// killed process left. History is never written. Replay fails only when
// it cannot set up the overlay, or when ctx ends (then fn is not called
// again).
func Replay(ctx context.Context, img Image, opts Options, attach func(typ string) bool, fn func(Filesystem)) (err error) {
	cfg := opts.config()
	if cfg.StateDir == "" {
		return errors.New("mount: Replay needs Options.StateDir for its overlay and state file")
	}
	if err := needTools(); err != nil {
		return err
	}
	m, err := newMount("", cfg)
	if err != nil {
		return err
	}
	defer func() {
		if terr := m.teardown(); terr != nil {
			err = errors.Join(err, fmt.Errorf("mount: cleaning up after Replay: %w", terr))
		}
	}()
	backing, err := m.serveOverlay(img, "replay overlay "+m.id)
	if err != nil {
		return err
	}
	target := filepath.Join(cfg.StateDir, m.id, "fs")
	if err := m.mkdir(target); err != nil {
		return err
	}
	parts := findPartitions(img, img.Size())
	if parts == nil {
		parts = []partition{{Size: img.Size()}}
	}
	for _, p := range parts {
		if err := ctx.Err(); err != nil {
			return err
		}
		fs := Filesystem{Part: p.Name, Offset: p.Off, Size: p.Size}
		fs.Type, fs.Note = identify(img, p.Off)
		if fs.Type == "" && fs.Note == "" {
			fs.Note = "unknown filesystem type"
		}
		if fs.Type == "" || !attach(fs.Type) {
			fn(fs)
			continue
		}
		depth := m.depth()
		dev, merr := m.attachAndMount(backing, p, target, fs.Type)
		fs.Device = dev
		switch {
		case dev == "":
			fs.Note = "not attached: " + merr.Error()
		case merr != nil:
			fs.Note = "journal not replayed: " + merr.Error()
		default:
			// The newest step is the filesystem's mount: undo only it,
			// keeping the loop device.
			if uerr := m.undoLast(); uerr != nil {
				fs.Device, fs.Note = "", "not unmounted after the journal replay: "+uerr.Error()
			}
		}
		fn(fs)
		if uerr := m.undoTo(depth); uerr != nil {
			return fmt.Errorf("mount: detach %s: %w", dev, uerr)
		}
	}
	return nil
}
