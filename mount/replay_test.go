package mount

import (
	"context"
	"slices"
	"testing"
)

// replayT runs Replay on the image file at path and returns what fn saw;
// inside fn, look(fs) runs with the filesystem still attached.
func replayT(t *testing.T, path string, attach func(string) bool, look func(Filesystem)) []Filesystem {
	t.Helper()
	img, err := openFileImage(path)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	before := shaFile(t, path)
	state := t.TempDir()
	var seen []Filesystem
	err = Replay(context.Background(), img, Options{StateDir: state}, attach, func(fs Filesystem) {
		seen = append(seen, fs)
		if look != nil {
			look(fs)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	assertNoLeftovers(t, state)
	if img.writes.Load() != 0 || shaFile(t, path) != before {
		t.Errorf("history was written (%d writes)", img.writes.Load())
	}
	return seen
}

// Replay hands over each filesystem with its journal replayed into the
// overlay: mounted without journal recovery, its device shows the file
// that was only in the journal.
func TestReplayReplaysJournal(t *testing.T) {
	requireTools(t, filesTools)
	for _, fstype := range []string{"ext4", "xfs"} {
		t.Run(fstype, func(t *testing.T) {
			snap := journalOnly(t, fstype)
			var got []string
			seen := replayT(t, snap, func(string) bool { return true }, func(fs Filesystem) {
				if fs.Device == "" {
					t.Fatalf("%+v: not attached", fs)
				}
				got = lsWithoutJournal(t, fs.Device, fstype)
			})
			if len(seen) != 1 || seen[0].Type != fstype || seen[0].Part != "" || seen[0].Note != "" {
				t.Errorf("seen %+v, want one whole-disk %s", seen, fstype)
			}
			if !slices.Contains(got, "j.txt") || !slices.Contains(got, "a.txt") {
				t.Errorf("after the replay the device holds %q, want a.txt and j.txt", got)
			}
		})
	}
}

// Each partition is handed over in order; only the types asked for are
// attached, and the rest say what they are.
func TestReplayPartitions(t *testing.T) {
	requireTools(t, filesTools)
	seen := replayT(t, makeGPTDisk(t), func(typ string) bool { return typ == "ext4" }, func(fs Filesystem) {
		if fs.Device != "" {
			if got := lsWithoutJournal(t, fs.Device, fs.Type); !slices.Contains(got, "a.txt") {
				t.Errorf("%s holds %q", fs.Part, got)
			}
		}
	})
	type row struct {
		part, typ, note string
		attached        bool
	}
	var got []row
	for _, fs := range seen {
		got = append(got, row{fs.Part, fs.Type, fs.Note, fs.Device != ""})
	}
	want := []row{{"p1", "ext4", "", true}, {"p2", "xfs", "", false}, {"p3", "", "unknown filesystem type", false}}
	if !slices.Equal(got, want) {
		t.Errorf("seen %+v, want %+v", got, want)
	}
}
