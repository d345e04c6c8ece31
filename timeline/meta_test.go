package timeline

import (
	"bytes"
	randv2 "math/rand/v2"
	"reflect"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Clone writes leave the volume's metadata record behind (see
// maxUnsavedVersions): after a power loss that kept every write (they
// were flushed), the reopened store knows each of them, its count,
// bytes, first and last times, from the summary records; a clean close
// writes the record itself.
func TestCloneWriteMetadataAfterCrash(t *testing.T) {
	e := &scriptEnv{t: t, fs: vfs.NewCrashableMem(), clock: 1000}
	e.open()
	const size = 64 * testBS
	v := cloneOf(t, e, pattern(1, size), testBS)
	rng := randv2.New(randv2.NewPCG(1, 2))
	p := make([]byte, 1024)
	// More than maxUnsavedVersions, so that the record was written once
	// on the way, and some after it.
	for i := range maxUnsavedVersions + 300 {
		for k := range p {
			p[k] = byte(rng.IntN(256))
		}
		e.clock += 10
		if _, err := v.WriteAt(p, int64(rng.IntN(size/len(p)))*int64(len(p))); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	want, err := e.s.Volume("c")
	if err != nil {
		t.Fatal(err)
	}
	if want.Versions != maxUnsavedVersions+301 { // the clone's own, and the writes
		t.Fatalf("the clone has %d versions, want %d", want.Versions, maxUnsavedVersions+301)
	}
	content := make([]byte, size)
	if _, err := v.ReadAt(content, 0); err != nil {
		t.Fatal(err)
	}
	stored := func() *Volume {
		val, closer, err := e.db.Get(metaKey(want.ID))
		if err != nil {
			t.Fatal(err)
		}
		defer closer.Close()
		m, err := unmarshalVolume(val)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := stored(); m.Versions == want.Versions {
		t.Fatalf("the metadata record was written by every clone write (%d versions)", m.Versions)
	}
	crashed := e.fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	v.Close()
	e.close()
	e.fs = crashed
	e.open()
	check := func(when string) {
		t.Helper()
		got, err := e.s.Volume("c")
		if err != nil {
			t.Fatal(err)
		}
		got, w := got.clone(), want.clone()
		got.ranges, got.cover, w.ranges, w.cover = nil, nil, nil, nil
		if !reflect.DeepEqual(got, w) {
			t.Fatalf("%s: metadata\n%+v\nwant\n%+v", when, got, w)
		}
		if e.s.mu.last < want.Last {
			t.Fatalf("%s: the clock reads %d, before the newest version %d", when, e.s.mu.last, want.Last)
		}
		log, err := e.s.Log(want.ID, 0, 1<<62)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(log)) != want.Versions {
			t.Fatalf("%s: the log lists %d versions, want %d", when, len(log), want.Versions)
		}
		v := cloneView(t, e)
		defer v.Close()
		got2 := make([]byte, size)
		if _, err := v.ReadAt(got2, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got2, content) {
			t.Fatalf("%s: the clone reads other bytes", when)
		}
	}
	check("after a power loss")
	// A clean close writes the record: the next open has nothing to roll
	// forward.
	e.close()
	e.open()
	if m := stored(); m.Versions != want.Versions || m.Last != want.Last {
		t.Fatalf("after a clean close the record has %d versions to %d, want %d to %d", m.Versions, m.Last, want.Versions, want.Last)
	}
	check("after a clean close")
	e.close()
}
