package nbd

import (
	"bytes"
	"testing"
)

// FuzzDecodeRequest feeds request headers to the decoder and the
// validation that runs before anything is read or allocated, and checks
// that what passes is safe to execute.
func FuzzDecodeRequest(f *testing.F) {
	add := func(flags, typ uint16, off uint64, length uint32) {
		var b [requestLen]byte
		be.PutUint32(b[0:], MagicRequest)
		be.PutUint16(b[4:], flags)
		be.PutUint16(b[6:], typ)
		be.PutUint64(b[8:], 42)
		be.PutUint64(b[16:], off)
		be.PutUint32(b[24:], length)
		f.Add(b[:], int64(1<<20), uint8(0))
		f.Add(b[:], int64(1<<20), uint8(7))
	}
	add(0, CmdRead, 0, 4096)
	add(CmdFlagDF, CmdRead, 1<<20-1, 1)
	add(0, CmdWrite, 1<<20-512, 512)
	add(CmdFlagFUA, CmdWrite, 0, MaxPayload+1)
	add(CmdFlagReqOne, CmdBlockStatus, 1<<20-4096, 0xffffffff)
	add(0, CmdBlockStatus, 0xffffffffffffffff, 2)
	add(CmdFlagFastZero|CmdFlagNoHole, CmdWriteZeroes, 0, 0xffffffff)
	add(0, CmdTrim, 1<<63, 1)
	add(0, CmdFlush, 0, 0)
	add(0, CmdCache, 0, 0)
	add(0xffff, 0xffff, 0, 0)
	f.Add(make([]byte, requestLen), int64(0), uint8(0))

	f.Fuzz(func(t *testing.T, hdr []byte, size int64, mode uint8) {
		if len(hdr) < requestLen || size < 0 {
			return
		}
		var b [requestLen]byte
		copy(b[:], hdr)
		r, ok := decodeRequest(&b)
		if ok != (be.Uint32(hdr) == MagicRequest) {
			t.Fatalf("magic %#x decoded=%v", be.Uint32(hdr), ok)
		}
		if !ok {
			return
		}
		s := &session{exp: &Export{ReadOnly: mode&1 != 0}, structured: mode&2 != 0, size: size}
		s.metaAlloc = s.structured && mode&4 != 0
		e := s.check(&r)
		if e != nil {
			if e.errno == 0 || e.msg == "" || len(truncString(e.msg)) > maxString {
				t.Fatalf("%v: bad rejection %+v", r, e)
			}
			return
		}
		allowed, known := s.allowedFlags(r.typ)
		if !known || r.flags&^allowed != 0 {
			t.Fatalf("%v accepted with flags outside %#x", r, allowed)
		}
		if r.typ == CmdFlush {
			return
		}
		if r.length == 0 || r.offset > uint64(size) || uint64(r.length) > uint64(size)-r.offset {
			t.Fatalf("%v accepted out of range for size %d", r, size)
		}
		if (r.typ == CmdRead || r.typ == CmdWrite) && r.length > MaxPayload {
			t.Fatalf("%v accepted over the maximum payload", r)
		}
		if s.exp.ReadOnly && (r.typ == CmdWrite || r.typ == CmdTrim || r.typ == CmdWriteZeroes) {
			t.Fatalf("%v accepted on a read-only export", r)
		}
		if r.typ == CmdBlockStatus && !s.metaAlloc {
			t.Fatalf("%v accepted without a context", r)
		}
		if n := s.budgetFor(&r); n < 0 || n > connBudget {
			t.Fatalf("%v: budget %d", r, n)
		}
	})
}

// FuzzOptionData feeds option data to the INFO/GO and meta context
// decoders.
func FuzzOptionData(f *testing.F) {
	f.Add([]byte{0, 0, 0, 4, 'd', 'i', 's', 'k', 0, 1, 0, 3})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0})
	f.Add([]byte{0, 0, 0, 4, 'd', 'i', 's', 'k', 0, 0, 0, 1, 0, 0, 0, 15, 'b', 'a', 's', 'e', ':', 'a', 'l', 'l', 'o', 'c', 'a', 't', 'i', 'o', 'n'})
	f.Add([]byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		if req, err := parseInfoRequest(data); err == nil {
			if len(req.name) > maxString {
				t.Fatalf("name of %d bytes accepted", len(req.name))
			}
			// What was accepted is exactly what was sent.
			re := be.AppendUint32(nil, uint32(len(req.name)))
			re = append(re, req.name...)
			re = be.AppendUint16(re, uint16(len(req.infos)))
			for _, i := range req.infos {
				re = be.AppendUint16(re, i)
			}
			if !bytes.Equal(re, data) {
				t.Fatalf("INFO data % x re-encodes as % x", data, re)
			}
		}
		if req, err := parseMetaRequest(data); err == nil {
			re := be.AppendUint32(nil, uint32(len(req.export)))
			re = append(re, req.export...)
			re = be.AppendUint32(re, uint32(len(req.queries)))
			for _, q := range req.queries {
				if len(q) > maxString {
					t.Fatalf("query of %d bytes accepted", len(q))
				}
				re = be.AppendUint32(re, uint32(len(q)))
				re = append(re, q...)
			}
			if !bytes.Equal(re, data) {
				t.Fatalf("meta data % x re-encodes as % x", data, re)
			}
		}
	})
}
