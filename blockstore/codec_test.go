package blockstore

import (
	"bytes"
	"errors"
	"math/rand"
	"runtime"
	"testing"
)

// TestIncompressibleGate checks that the shortcut past zstd takes exactly
// the blocks zstd itself could not shrink by 1/16.
func TestIncompressibleGate(t *testing.T) {
	cs, err := newCodecs()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(7))
	random := make([]byte, 65536)
	rng.Read(random)
	repeated := bytes.Repeat(random[:4096], 16) // high entropy, but repeats
	skewed := make([]byte, 65536)               // no repeats, 6 bits a byte
	for i := range skewed {
		skewed[i] = byte(rng.Intn(64))
	}
	mixed := append(append([]byte{}, random[:49152]...), bytes.Repeat([]byte("log line 42\n"), 1366)[:16384]...)
	small := random[:4096]
	for _, tc := range []struct {
		name string
		data []byte
		raw  bool
	}{
		{"random", random, true},
		{"small random", small, true},
		{"repeated random", repeated, false},
		{"skewed", skewed, len(cs.zenc.EncodeAll(skewed, nil)) >= len(skewed)-len(skewed)/16},
		{"random then text", mixed, false},
	} {
		payload, codec := cs.encode(CodecZstd, tc.data, make([]byte, 0, 128<<10))
		if (codec == CodecRaw) != tc.raw {
			t.Errorf("%s: codec %s, want raw=%v", tc.name, codec, tc.raw)
		}
		got, err := cs.decode(codec, payload, len(tc.data), nil)
		if err != nil || !bytes.Equal(got, tc.data) {
			t.Errorf("%s: round trip failed: %v", tc.name, err)
		}
	}
}

// A damaged payload that claims a huge decoded length is an error before
// anything of that size is allocated.
func TestDecodeRefusesClaimedLengths(t *testing.T) {
	cs, err := newCodecs()
	if err != nil {
		t.Fatal(err)
	}
	s2Claim := append([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, make([]byte, 32)...) // 4 GiB
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := cs.decode(CodecS2, s2Claim, 65536, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("s2 payload claiming 4 GiB: %v", err)
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("s2 payload claiming 4 GiB: %d bytes allocated", grew)
	}
	big := cs.zenc.EncodeAll(bytes.Repeat([]byte("abc"), 1<<20), nil) // 3 MiB
	if _, err := cs.decode(CodecZstd, big, 65536, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("zstd frame of 3 MiB for a 64 KiB chunk: %v", err)
	}
}
