package nbd

import (
	"errors"
	"fmt"
	"math/bits"
)

// infoRequest is the data of NBD_OPT_INFO and NBD_OPT_GO.
type infoRequest struct {
	name  string
	infos []uint16
}

// parseInfoRequest decodes u32 name length, name, u16 count, count x u16.
// Its errors are messages for NBD_REP_ERR_INVALID.
func parseInfoRequest(data []byte) (infoRequest, error) {
	if len(data) < 6 {
		return infoRequest{}, fmt.Errorf("option data of %d bytes is shorter than 6", len(data))
	}
	nameLen := be.Uint32(data)
	// Compare in 64 bits: the name must leave room for the u16 count
	// (CVE-2022-26495: name length overflowing the option).
	if uint64(nameLen) > uint64(len(data))-6 {
		return infoRequest{}, fmt.Errorf("name length %d exceeds option length %d - 6", nameLen, len(data))
	}
	if nameLen > maxString {
		return infoRequest{}, fmt.Errorf("name length %d exceeds %d", nameLen, maxString)
	}
	rest := data[4+nameLen:]
	req := infoRequest{name: string(data[4 : 4+nameLen])}
	count := int(be.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*count {
		return infoRequest{}, fmt.Errorf("%d information requests need %d bytes, have %d", count, 2*count, len(rest))
	}
	req.infos = make([]uint16, count)
	for i := range req.infos {
		req.infos[i] = be.Uint16(rest[2*i:])
	}
	return req, nil
}

// appendInfoReplies appends the NBD_REP_INFO replies for a session:
// always EXPORT and BLOCK_SIZE, NAME and DESCRIPTION when asked for.
func appendInfoReplies(b []byte, opt uint32, s *session, infos []uint16) []byte {
	var rec [14]byte
	be.PutUint16(rec[0:], InfoExport)
	be.PutUint64(rec[2:], uint64(s.size))
	be.PutUint16(rec[10:], s.flags)
	b = appendOptionReply(b, opt, RepInfo, rec[:12], "")

	be.PutUint16(rec[0:], InfoBlockSize)
	be.PutUint32(rec[2:], 1)
	be.PutUint32(rec[6:], s.blockSize)
	be.PutUint32(rec[10:], MaxPayload)
	b = appendOptionReply(b, opt, RepInfo, rec[:14], "")

	var name, desc bool
	for _, i := range infos {
		name = name || i == InfoName
		desc = desc || i == InfoDescription
	}
	if name {
		b = appendOptionReply(b, opt, RepInfo, be.AppendUint16(nil, InfoName), truncString(s.name))
	}
	if desc {
		b = appendOptionReply(b, opt, RepInfo, be.AppendUint16(nil, InfoDescription), truncString(s.exp.Description))
	}
	return b
}

// metaRequest is the data of NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT.
type metaRequest struct {
	export  string
	queries []string
}

var errMetaSyntax = errors.New("malformed meta context request")

// parseMetaRequest decodes u32 name length, name, u32 count, then count x
// (u32 length, query). Every length is checked against what is left.
func parseMetaRequest(data []byte) (metaRequest, error) {
	var req metaRequest
	name, rest, err := takeString(data, "export name")
	if err != nil {
		return req, err
	}
	req.export = name
	if len(rest) < 4 {
		return req, fmt.Errorf("%w: no query count", errMetaSyntax)
	}
	count := be.Uint32(rest)
	rest = rest[4:]
	// Each query takes at least 4 bytes: a huge count cannot make us loop
	// or allocate beyond the option's own size.
	if uint64(count) > uint64(len(rest))/4 {
		return req, fmt.Errorf("%w: %d queries cannot fit in %d bytes", errMetaSyntax, count, len(rest))
	}
	req.queries = make([]string, 0, count)
	for range count {
		var q string
		if q, rest, err = takeString(rest, "query"); err != nil {
			return req, err
		}
		req.queries = append(req.queries, q)
	}
	if len(rest) != 0 {
		return req, fmt.Errorf("%w: %d bytes after the last query", errMetaSyntax, len(rest))
	}
	return req, nil
}

// takeString decodes a u32 length and that many bytes.
func takeString(b []byte, what string) (string, []byte, error) {
	if len(b) < 4 {
		return "", nil, fmt.Errorf("%w: %s length missing", errMetaSyntax, what)
	}
	n := be.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return "", nil, fmt.Errorf("%w: %s length %d exceeds the %d bytes left", errMetaSyntax, what, n, len(b)-4)
	}
	if n > maxString {
		return "", nil, fmt.Errorf("%w: %s length %d exceeds %d", errMetaSyntax, what, n, maxString)
	}
	return string(b[4 : 4+n]), b[4+n:], nil
}

// matchAllocation reports whether queries select base:allocation. In a
// list, no query and the "base:" wildcard match too; in a selection they
// select nothing, as the protocol requires. Other namespaces are ignored.
func matchAllocation(queries []string, list bool) bool {
	if list && len(queries) == 0 {
		return true
	}
	for _, q := range queries {
		if q == MetaContextBaseAllocation || (list && q == "base:") {
			return true
		}
	}
	return false
}

// metaContext handles NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT. A SET replaces the selection even when it
// fails.
func (n *negotiation) metaContext(opt uint32, data []byte) error {
	set := opt == OptSetMetaContext
	if set {
		n.meta = metaSelection{}
		if !n.structured {
			return n.replyError(opt, RepErrInvalid, "negotiate NBD_OPT_STRUCTURED_REPLY before NBD_OPT_SET_META_CONTEXT")
		}
	}
	req, err := parseMetaRequest(data)
	if err != nil {
		return n.replyError(opt, RepErrInvalid, err.Error())
	}
	n.out = n.out[:0]
	if matchAllocation(req.queries, !set) {
		var id [4]byte
		if set {
			n.meta = metaSelection{export: req.export, allocation: true}
			be.PutUint32(id[:], metaContextID)
		}
		n.out = appendOptionReply(n.out, opt, RepMetaContext, id[:], MetaContextBaseAllocation)
	}
	n.out = appendOptionReply(n.out, opt, RepAck, nil, "")
	return n.flush()
}

// transmissionFlags are the flags advertised for an export.
func transmissionFlags(exp *Export, structured bool) uint16 {
	f := FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendCache
	if exp.ReadOnly {
		f |= FlagReadOnly
	} else {
		f |= FlagSendTrim | FlagSendWriteZeroes | FlagSendFastZero
	}
	if structured {
		f |= FlagSendDF
	}
	if exp.MultiConn {
		f |= FlagCanMultiConn
	}
	return f
}

// preferredBlockSize makes Export.BlockSize a valid preferred block size:
// a power of two in [512, MaxPayload].
func preferredBlockSize(bs uint32) uint32 {
	switch {
	case bs == 0:
		return 4096
	case bs <= 512:
		return 512
	case bs >= MaxPayload:
		return MaxPayload
	default:
		return 1 << bits.Len32(bs-1)
	}
}
