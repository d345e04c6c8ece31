package blockstore

import (
	"fmt"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// codecs holds the shared encoders and decoders. EncodeAll and DecodeAll
// are safe for concurrent use.
type codecs struct {
	zenc *zstd.Encoder
	zdec *zstd.Decoder
}

func newCodecs() (*codecs, error) {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1),
		zstd.WithZeroFrames(true),
		zstd.WithEncoderCRC(false)) // records carry their own CRC-32C
	if err != nil {
		return nil, err
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.IgnoreChecksum(true))
	if err != nil {
		return nil, err
	}
	return &codecs{zenc: enc, zdec: dec}, nil
}

// encode compresses data with c and returns the payload and the codec
// actually used: raw when compression saves less than 1/16 of the size.
func (cs *codecs) encode(c Codec, data, dst []byte) ([]byte, Codec) {
	var out []byte
	switch c {
	case CodecZstd:
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

func (cs *codecs) decode(c Codec, payload []byte, decodedLen int) ([]byte, error) {
	var out []byte
	var err error
	switch c {
	case CodecRaw:
		out = payload
	case CodecZstd:
		out, err = cs.zdec.DecodeAll(payload, make([]byte, 0, decodedLen))
	case CodecS2:
		out, err = s2.Decode(make([]byte, decodedLen), payload)
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
