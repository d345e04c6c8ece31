package timeline

import (
	"testing"

	"github.com/rewind-dev/rewind/blockstore"
)

// FuzzRecords feeds arbitrary bytes to every on-disk record decoder of the
// timeline: none may panic, and what decodes must encode back the same.
func FuzzRecords(f *testing.F) {
	f.Add((&runs{r: []run{{0, 3}, {10, 1}}}).marshal())
	f.Add(summary{Kind: VersionImport, Blocks: 3, Bytes: 1 << 20, Stored: 99, Size: 1 << 30}.marshal())
	f.Add(encodeValue(blockRef{kind: refZero}))
	f.Add(encodeValue(blockRef{kind: refChunk, id: [32]byte{1, 2, 3}}))
	f.Add(encodePatch(patch{off: 4096, n: 4096, id: [32]byte{4, 5}}))
	f.Add(encodePatch(patch{off: 512, n: 100, zero: true}))
	// Places: version | pack u32 | offset u64 | payload u32 | decoded u32 |
	// codec, and a bundle member's offset and bundle length.
	whole := []byte{1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0x20, 0, 0, 0, 0x10, 0, 1}
	member := []byte{2, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0x20, 0, 0, 0, 0x10, 0, 4, 0, 0, 0x20, 0, 0, 1, 0, 0}
	for _, p := range [][]byte{whole, member} {
		if _, err := blockstore.ParsePlace(p); err != nil {
			f.Fatal(err)
		}
	}
	f.Add(append(encodeValue(blockRef{kind: refChunk, id: [32]byte{1, 2, 3}}), whole...))
	f.Add(append(encodePatch(patch{off: 4096, n: 4096, id: [32]byte{4, 5}}), member...))
	f.Add((&Volume{ID: 1, Name: "db01", Size: 1 << 30, BlockSize: 65536}).marshal())
	f.Add(versionKey(nil, 1, 2, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		if rs, err := unmarshalRuns(b); err == nil {
			var again runs
			for _, r := range rs {
				for i := uint64(0); i < r.n && i < 1<<16; i++ {
					again.add(r.start + i)
				}
			}
			_ = again.marshal()
		}
		if s, err := unmarshalSummary(b); err == nil {
			if back, err := unmarshalSummary(s.marshal()); err != nil || back != s {
				t.Fatalf("summary does not round-trip: %+v", s)
			}
		}
		if e, err := decodeValue(b); err == nil {
			again := encodeValue(e.ref)
			if e.isPatch {
				again = encodePatch(e.patch)
			}
			if string(again) != string(b) {
				t.Fatalf("value does not round-trip")
			}
		}
		_, _ = unmarshalVolume(b)
		if vol, block, tt, ok := parseVersionKey(b); ok {
			if k := versionKey(nil, vol, block, tt); string(k) != string(b) {
				t.Fatalf("version key does not round-trip")
			}
		}
		_, _, _, _ = parseTimeKey(b)
		_ = Comparer.Split(b)
	})
}
