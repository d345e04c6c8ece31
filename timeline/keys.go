package timeline

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Key layout, format version 1. These constants are part of the on-disk
// format and must not be changed; a new layout gets a new comparer name
// and format version.
//
//	'v' | volume u64 | block u64 | ^time u64  -> version value (see below)
//	't' | volume u64 | time u64 | part u32    -> the blocks a version wrote
//	'z' | volume u64 | time u64               -> a range record (ranges.go)
//	'm' | volume u64                          -> volume metadata (volume.go)
//	'i' | volume u64 | time u64               -> a version being written
//	'g' | name                                -> store-wide values
//	'n' | volume name                         -> volume id u64
//
// A range record says that a version made a run of whole blocks read as
// zeroes (a TRIM or WRITE_ZEROES of them): it stands for a hole version of
// each block, without a version key per block. At most one per version;
// the time-index runs ('t') list only the version keys a version wrote,
// never a range record's blocks. Range records reference no chunk: a walk
// of version values for the chunks they name reads 'v' keys only.
//
// Version keys sort newest first within a block, so
// SeekPrefixGE(v|vol|block|^T) lands on the version to read as of T. The
// Comparer's Split cuts a version key after the block number; every other
// key is all prefix. The chunk index ('c' keys) and page fingerprints
// ('f' keys) belong to blockstore.
const (
	tagVersion       = 'v'
	tagTime          = 't'
	tagMeta          = 'm'
	tagPending       = 'i'
	tagGlobal        = 'g'
	tagName          = 'n'
	tagRange         = 'z'
	versionKeyLen    = 1 + 8 + 8 + 8
	versionPrefixLen = 1 + 8 + 8
	timeKeyLen       = 1 + 8 + 8 + 4
	rangeKeyLen      = 1 + 8 + 8
	// summaryPart is the part number of a version's summary record, written
	// in the batch that makes the version visible.
	summaryPart = 0xffffffff

	// ComparerName is stored by Pebble and checked on every open.
	ComparerName = "rewind.timeline.v1"
	// FormatVersion is stored under 'g'|"format". A store made by this
	// build has it; an older store takes it in the batch of its first
	// range record. Builds before range records read formatNoRanges only,
	// so they refuse a store that they would read wrongly (the blocks a
	// range record zeroes would show their older versions).
	FormatVersion = "rewind-store-2"
	// formatNoRanges is the format of a store with no range record, which
	// this build reads too.
	formatNoRanges = "rewind-store-1"
)

// Comparer orders keys bytewise and splits version keys into a
// (volume, block) prefix and a ^time suffix, so bloom filters and
// SeekPrefixGE work per block.
var Comparer = func() *pebble.Comparer {
	c := *pebble.DefaultComparer
	c.Name = ComparerName
	c.Split = func(k []byte) int {
		if len(k) == versionKeyLen && k[0] == tagVersion {
			return versionPrefixLen
		}
		return len(k)
	}
	// Never shorten keys: a shortened key could split differently from
	// the keys around it. Returning the key itself is always valid.
	c.Separator = func(dst, a, b []byte) []byte { return append(dst, a...) }
	c.Successor = func(dst, a []byte) []byte { return append(dst, a...) }
	c.FormatKey = formatKey
	return &c
}()

func versionKey(dst []byte, vol, block uint64, t int64) []byte {
	dst = append(dst[:0], tagVersion)
	dst = binary.BigEndian.AppendUint64(dst, vol)
	dst = binary.BigEndian.AppendUint64(dst, block)
	return binary.BigEndian.AppendUint64(dst, ^uint64(t))
}

func parseVersionKey(k []byte) (vol, block uint64, t int64, ok bool) {
	if len(k) != versionKeyLen || k[0] != tagVersion {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint64(k[1:]), binary.BigEndian.Uint64(k[9:]), int64(^binary.BigEndian.Uint64(k[17:])), true
}

func volumeBounds(tag byte, vol uint64) (lo, hi []byte) {
	lo = binary.BigEndian.AppendUint64([]byte{tag}, vol)
	hi = binary.BigEndian.AppendUint64([]byte{tag}, vol+1)
	return lo, hi
}

func timeKey(vol uint64, t int64, part uint32) []byte {
	k := binary.BigEndian.AppendUint64([]byte{tagTime}, vol)
	k = binary.BigEndian.AppendUint64(k, uint64(t))
	return binary.BigEndian.AppendUint32(k, part)
}

func parseTimeKey(k []byte) (vol uint64, t int64, part uint32, ok bool) {
	if len(k) != timeKeyLen || k[0] != tagTime {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint64(k[1:]), int64(binary.BigEndian.Uint64(k[9:])), binary.BigEndian.Uint32(k[17:]), true
}

func rangeKey(vol uint64, t int64) []byte {
	k := binary.BigEndian.AppendUint64([]byte{tagRange}, vol)
	return binary.BigEndian.AppendUint64(k, uint64(t))
}

func parseRangeKey(k []byte) (vol uint64, t int64, ok bool) {
	if len(k) != rangeKeyLen || k[0] != tagRange {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(k[1:]), int64(binary.BigEndian.Uint64(k[9:])), true
}

func metaKey(vol uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{tagMeta}, vol)
}

func pendingKey(vol uint64, t int64) []byte {
	k := binary.BigEndian.AppendUint64([]byte{tagPending}, vol)
	return binary.BigEndian.AppendUint64(k, uint64(t))
}

func nameKey(name string) []byte { return append([]byte{tagName}, name...) }

func globalKey(name string) []byte { return append([]byte{tagGlobal}, name...) }

func formatKey(k []byte) fmt.Formatter {
	if vol, block, t, ok := parseVersionKey(k); ok {
		return rawFormatter(fmt.Sprintf("v/%d/%d@%d", vol, block, t))
	}
	if vol, t, part, ok := parseTimeKey(k); ok {
		return rawFormatter(fmt.Sprintf("t/%d@%d#%d", vol, t, part))
	}
	if vol, t, ok := parseRangeKey(k); ok {
		return rawFormatter(fmt.Sprintf("z/%d@%d", vol, t))
	}
	return pebble.DefaultComparer.FormatKey(k)
}

type rawFormatter string

func (r rawFormatter) Format(s fmt.State, _ rune) { fmt.Fprint(s, string(r)) }

// Version values. Part of the on-disk format.
//
//	0x00                                  an all-zero block (a hole)
//	0x01 | chunk id [32]byte [| place]    a block held in the chunk store
//	0x02 | off u32 | n u32 | id [32]byte  a patch: bytes [off, off+n) of the
//	     [| place]                        block are chunk id, the rest is
//	                                      what the block's previous
//	                                      version holds
//	0x03 | off u32 | n u32                a patch of zeroes
//
// place, when present, is where the chunk's record lay when the version
// was written, encoded as the chunk index's entry (22 bytes, 30 for a
// member of a bundle; see blockstore.Place): reads try it before the
// index. Values written before places have none and read the same.
// Builds before places refuse the longer values as bad values.
//
// A block as of T is the newest base (0x00, 0x01) at or before T, or, in
// a clone with none, the parent's block as of the fork, with every patch
// stamped after that base and at or before T applied over it in time
// order. Writers bound a block's run of patches (see maxPatches), so a
// read applies at most that many per volume of a clone chain. Builds
// before patches refuse 0x02 and 0x03 as bad values: they never read a
// patched block wrongly.
const (
	valueZero      = 0x00
	valueChunk     = 0x01
	valuePatch     = 0x02
	valueZeroPatch = 0x03
)

func hasPrefix(k []byte, vol, block uint64) bool {
	var p [versionPrefixLen]byte
	p[0] = tagVersion
	binary.BigEndian.PutUint64(p[1:], vol)
	binary.BigEndian.PutUint64(p[9:], block)
	return len(k) >= versionPrefixLen && bytes.Equal(k[:versionPrefixLen], p[:])
}
