package blockstore

import (
	"testing"
)

// FuzzDecoders feeds arbitrary bytes to the pack and index decoders: none
// may panic, and a payload that does not decode is ErrCorrupt.
func FuzzDecoders(f *testing.F) {
	h := recordHeader{payloadLen: 10, decodedLen: 20, codec: CodecZstd, crc: 7, id: ID{1}}
	b := make([]byte, recordHeaderSize)
	h.marshal(b)
	f.Add(b)
	f.Add(location{pack: 1, offset: 16, payloadLen: 10, decodedLen: 20, codec: CodecZstd}.marshal())
	f.Add(packHeader())
	cs, err := newCodecs()
	if err != nil {
		f.Fatal(err)
	}
	s := &Store{codecs: cs}
	z, _ := cs.encode(CodecZstd, make([]byte, 4096), make([]byte, 0, 8192))
	f.Add(z)
	chunks := [][]byte{textBlock(1, 4096), textBlock(2, 4096)}
	if bundle, ok := cs.appendBundle(nil, []ID{Sum(chunks[0]), Sum(chunks[1])}, chunks); ok {
		f.Add(bundle)
	}
	f.Add(location{pack: 1, offset: 16, payloadLen: 10, decodedLen: 20, codec: CodecBundle, member: 20, bundleLen: 40}.marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		if members, _, err := s.decodeBundle(b, 8192, nil); err == nil {
			end := uint32(0)
			for _, m := range members {
				if m.off != end || m.length == 0 {
					t.Fatalf("bundle members do not tile the bundle")
				}
				end += m.length
			}
			if end != 8192 {
				t.Fatalf("bundle members add up to %d", end)
			}
		}
		var h recordHeader
		_ = h.unmarshal(b)
		if l, err := unmarshalLocation(b); err == nil {
			if back, _ := unmarshalLocation(l.marshal()); back != l {
				t.Fatalf("location does not round-trip")
			}
		}
		_ = checkPackHeader(b)
		for _, c := range []Codec{CodecRaw, CodecZstd, CodecS2, 9} {
			out, err := cs.decode(c, b, 4096, nil)
			if err == nil && len(out) != 4096 {
				t.Fatalf("decode returned %d bytes without an error", len(out))
			}
		}
	})
}

// FuzzSlices feeds arbitrary payloads to the slices decoder: it may not
// panic, and what it accepts adds up to the chunk's length. The assembler
// over damaged payloads is TestDamagedSlicesNeverServeOtherBytes.
func FuzzSlices(f *testing.F) {
	cs, err := newCodecs()
	if err != nil {
		f.Fatal(err)
	}
	data := make([]byte, 65536)
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	f.Add(cs.encodeSlices(CodecZstd, data, []segment{{length: 8192}, {length: 57344, ref: true, offset: 4096, src: Sum(data)}}))
	f.Add(cs.encodeSlices(CodecRaw, data, []segment{{length: 65536}}))
	f.Fuzz(func(t *testing.T, payload []byte) {
		segs, lit, _, err := cs.parseSlices(payload, 65536)
		if err != nil {
			return
		}
		total, litLen := 0, 0
		for _, sg := range segs {
			total += int(sg.length)
			if !sg.ref {
				litLen += int(sg.length)
			}
		}
		if total != 65536 || len(lit) != litLen {
			t.Fatalf("segments of %d bytes, %d literal bytes for %d", total, len(lit), litLen)
		}
	})
}
