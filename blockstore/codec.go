package blockstore

import (
	"fmt"
	"math"
	"runtime"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// codecs holds the shared encoders and decoders. EncodeAll and DecodeAll
// are safe for concurrent use.
type codecs struct {
	zenc *zstd.Encoder
	benc *zstd.Encoder // for bundles
	zdec *zstd.Decoder
}

func newCodecs() (*codecs, error) {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		// EncodeAll runs at most this many encodes at once: one per CPU,
		// since import workers compress side by side.
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithZeroFrames(true),
		zstd.WithEncoderCRC(false)) // records carry their own CRC-32C
	if err != nil {
		return nil, err
	}
	// Bundles are a megabyte of text, logs and file system metadata: the
	// better level saves 5% of them over the default (70.6 MB against
	// 74.1 MB for the benchmark image) for 1.4 times the time. A window
	// no larger than a bundle, and smaller tables, change no byte of the
	// output and save a fifth of that time.
	benc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedBetterCompression),
		zstd.WithWindowSize(maxBundleBytes),
		zstd.WithLowerEncoderMem(true),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithZeroFrames(true),
		zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, err
	}
	// The decoded length is known: DecodeAll may not produce more than the
	// buffer it is given holds, whatever sizes a damaged frame claims.
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.IgnoreChecksum(true), zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		return nil, err
	}
	return &codecs{zenc: enc, benc: benc, zdec: dec}, nil
}

// encode compresses data with c and returns the payload and the codec
// actually used: raw when compression saves less than 1/16 of the size.
func (cs *codecs) encode(c Codec, data, dst []byte) ([]byte, Codec) {
	var out []byte
	switch c {
	case CodecZstd:
		if incompressible(data, dst) {
			return data, CodecRaw
		}
		out = cs.zenc.EncodeAll(data, dst[:0])
	case CodecS2:
		out = s2.Encode(dst[:cap(dst)], data)
	default:
		return data, CodecRaw
	}
	if len(out) >= len(data)-len(data)/16 {
		return data, CodecRaw
	}
	return out, c
}

// zstdSlack is the spare capacity given to zstd's output.
const zstdSlack = 64

// decode decodes payload, into dst when it has room (decodedLen plus
// zstdSlack), else into a new buffer.
func (cs *codecs) decode(c Codec, payload []byte, decodedLen int, dst []byte) ([]byte, error) {
	if c != CodecRaw && cap(dst) < decodedLen+zstdSlack {
		dst = make([]byte, 0, decodedLen+zstdSlack)
	}
	var out []byte
	var err error
	switch c {
	case CodecRaw:
		out = payload
	case CodecZstd:
		// zstd's fast decode loop needs a little room past the end of
		// the output (compressedBlockOverAlloc, 32 bytes); without it
		// DecodeAll takes its safe loop, at about half the speed.
		out, err = cs.zdec.DecodeAll(payload, dst[:0])
	case CodecS2:
		// s2 allocates whatever length a payload claims: check it first.
		if n, lerr := s2.DecodedLen(payload); lerr != nil || n != decodedLen {
			return nil, fmt.Errorf("%w: s2 payload claims %d bytes, index says %d", ErrCorrupt, n, decodedLen)
		}
		out, err = s2.Decode(dst[:decodedLen], payload)
	default:
		return nil, fmt.Errorf("%w: unknown codec %d", ErrCorrupt, c)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s payload does not decode: %v", ErrCorrupt, c, err)
	}
	if len(out) != decodedLen {
		return nil, fmt.Errorf("%w: decoded %d bytes, index says %d", ErrCorrupt, len(out), decodedLen)
	}
	return out, nil
}

// incompressible reports whether data would not shrink by 1/16 under
// zstd, cheaply, so that encrypted or already compressed blocks (often
// half of a disk) skip zstd, which spends as long failing on them as it
// spends compressing text. Only when samples of the block look like
// random bytes (so entropy coding alone cannot save 1/16) does it ask s2,
// which passes over such data several times faster than zstd, whether
// repeats inside the block would save it; scratch is reused for s2's output.
func incompressible(data, scratch []byte) bool {
	if sampleEntropy(data) < 7.5 {
		return false
	}
	if need := s2.MaxEncodedLen(len(data)); need > 0 && cap(scratch) >= need {
		scratch = scratch[:need]
	} else {
		scratch = nil
	}
	return len(s2.Encode(scratch, data)) >= len(data)-len(data)/16
}

// sampleEntropy estimates the bits per byte of data from up to four 1 KiB
// samples spread over it.
func sampleEntropy(data []byte) float64 {
	var hist [256]int
	n := 0
	count := func(p []byte) {
		for _, b := range p {
			hist[b]++
		}
		n += len(p)
	}
	if len(data) <= 4096 {
		count(data)
	} else {
		step := len(data) / 4
		for i := 0; i < 4; i++ {
			count(data[i*step : i*step+1024])
		}
	}
	if n == 0 {
		return 0
	}
	e := 0.0
	for _, c := range hist {
		if c > 0 {
			f := float64(c) / float64(n)
			e -= f * math.Log2(f)
		}
	}
	return e
}
