package blockstore

import (
	"bytes"
	"math/rand"
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
		got, err := cs.decode(codec, payload, len(tc.data))
		if err != nil || !bytes.Equal(got, tc.data) {
			t.Errorf("%s: round trip failed: %v", tc.name, err)
		}
	}
}
