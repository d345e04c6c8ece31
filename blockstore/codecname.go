package blockstore

import "fmt"

// ParseCodec parses a compression name: zstd, s2 or none.
func ParseCodec(name string) (Codec, error) {
	switch name {
	case "", "zstd":
		return CodecZstd, nil
	case "s2":
		return CodecS2, nil
	case "none", "raw":
		return CodecRaw, nil
	}
	return 0, fmt.Errorf("blockstore: unknown compression %q (use zstd, s2 or none)", name)
}
