package nbd

import "encoding/binary"

// The constants below are the NBD wire protocol (NetworkBlockDevice/nbd
// doc/proto.md). They are part of the protocol and must not be changed.
// All integers on the wire are big-endian.

// Handshake magics.
const (
	MagicNBD         uint64 = 0x4e42444d41474943 // NBDMAGIC
	MagicIHaveOpt    uint64 = 0x49484156454F5054 // IHAVEOPT
	MagicOptReply    uint64 = 0x0003e889045565a9 // option reply magic
	MagicOldstyle    uint64 = 0x0000420281861253 // oldstyle cliserv magic (never sent)
	MagicRequest     uint32 = 0x25609513         // NBD_REQUEST_MAGIC
	MagicSimple      uint32 = 0x67446698         // NBD_SIMPLE_REPLY_MAGIC
	MagicStructured  uint32 = 0x668e33ef         // NBD_STRUCTURED_REPLY_MAGIC
	MagicExtRequest  uint32 = 0x21e41c71         // NBD_EXTENDED_REQUEST_MAGIC (not supported)
	MagicExtResponse uint32 = 0x6e8a278c         // NBD_EXTENDED_REPLY_MAGIC (not supported)
)

// Handshake flags (server) and client flags.
const (
	FlagFixedNewstyle    uint16 = 1 << 0 // NBD_FLAG_FIXED_NEWSTYLE
	FlagNoZeroes         uint16 = 1 << 1 // NBD_FLAG_NO_ZEROES
	FlagCFixedNewstyle   uint32 = 1 << 0 // NBD_FLAG_C_FIXED_NEWSTYLE
	FlagCNoZeroes        uint32 = 1 << 1 // NBD_FLAG_C_NO_ZEROES
	clientFlagsKnown            = FlagCFixedNewstyle | FlagCNoZeroes
	serverHandshakeFlags        = FlagFixedNewstyle | FlagNoZeroes
)

// Transmission flags.
const (
	FlagHasFlags        uint16 = 1 << 0  // NBD_FLAG_HAS_FLAGS
	FlagReadOnly        uint16 = 1 << 1  // NBD_FLAG_READ_ONLY
	FlagSendFlush       uint16 = 1 << 2  // NBD_FLAG_SEND_FLUSH
	FlagSendFUA         uint16 = 1 << 3  // NBD_FLAG_SEND_FUA
	FlagRotational      uint16 = 1 << 4  // NBD_FLAG_ROTATIONAL
	FlagSendTrim        uint16 = 1 << 5  // NBD_FLAG_SEND_TRIM
	FlagSendWriteZeroes uint16 = 1 << 6  // NBD_FLAG_SEND_WRITE_ZEROES
	FlagSendDF          uint16 = 1 << 7  // NBD_FLAG_SEND_DF
	FlagCanMultiConn    uint16 = 1 << 8  // NBD_FLAG_CAN_MULTI_CONN
	FlagSendResize      uint16 = 1 << 9  // NBD_FLAG_SEND_RESIZE
	FlagSendCache       uint16 = 1 << 10 // NBD_FLAG_SEND_CACHE
	FlagSendFastZero    uint16 = 1 << 11 // NBD_FLAG_SEND_FAST_ZERO
)

// Option types.
const (
	OptExportName      uint32 = 1  // NBD_OPT_EXPORT_NAME
	OptAbort           uint32 = 2  // NBD_OPT_ABORT
	OptList            uint32 = 3  // NBD_OPT_LIST
	OptPeekExport      uint32 = 4  // NBD_OPT_PEEK_EXPORT (withdrawn)
	OptStartTLS        uint32 = 5  // NBD_OPT_STARTTLS
	OptInfo            uint32 = 6  // NBD_OPT_INFO
	OptGo              uint32 = 7  // NBD_OPT_GO
	OptStructuredReply uint32 = 8  // NBD_OPT_STRUCTURED_REPLY
	OptListMetaContext uint32 = 9  // NBD_OPT_LIST_META_CONTEXT
	OptSetMetaContext  uint32 = 10 // NBD_OPT_SET_META_CONTEXT
	OptExtendedHeaders uint32 = 11 // NBD_OPT_EXTENDED_HEADERS (not supported)
)

// Option reply types. Errors have bit 31 set.
const (
	RepAck              uint32 = 1                 // NBD_REP_ACK
	RepServer           uint32 = 2                 // NBD_REP_SERVER
	RepInfo             uint32 = 3                 // NBD_REP_INFO
	RepMetaContext      uint32 = 4                 // NBD_REP_META_CONTEXT
	RepFlagError        uint32 = 1 << 31           // error bit
	RepErrUnsup         uint32 = RepFlagError | 1  // NBD_REP_ERR_UNSUP
	RepErrPolicy        uint32 = RepFlagError | 2  // NBD_REP_ERR_POLICY
	RepErrInvalid       uint32 = RepFlagError | 3  // NBD_REP_ERR_INVALID
	RepErrPlatform      uint32 = RepFlagError | 4  // NBD_REP_ERR_PLATFORM
	RepErrTLSReqd       uint32 = RepFlagError | 5  // NBD_REP_ERR_TLS_REQD
	RepErrUnknown       uint32 = RepFlagError | 6  // NBD_REP_ERR_UNKNOWN
	RepErrShutdown      uint32 = RepFlagError | 7  // NBD_REP_ERR_SHUTDOWN
	RepErrBlockSizeReqd uint32 = RepFlagError | 8  // NBD_REP_ERR_BLOCK_SIZE_REQD
	RepErrTooBig        uint32 = RepFlagError | 9  // NBD_REP_ERR_TOO_BIG
	RepErrExtHeaderReqd uint32 = RepFlagError | 10 // NBD_REP_ERR_EXT_HEADER_REQD
)

// Information types for NBD_OPT_INFO and NBD_OPT_GO.
const (
	InfoExport      uint16 = 0 // NBD_INFO_EXPORT
	InfoName        uint16 = 1 // NBD_INFO_NAME
	InfoDescription uint16 = 2 // NBD_INFO_DESCRIPTION
	InfoBlockSize   uint16 = 3 // NBD_INFO_BLOCK_SIZE
)

// Request types.
const (
	CmdRead        uint16 = 0 // NBD_CMD_READ
	CmdWrite       uint16 = 1 // NBD_CMD_WRITE
	CmdDisc        uint16 = 2 // NBD_CMD_DISC
	CmdFlush       uint16 = 3 // NBD_CMD_FLUSH
	CmdTrim        uint16 = 4 // NBD_CMD_TRIM
	CmdCache       uint16 = 5 // NBD_CMD_CACHE
	CmdWriteZeroes uint16 = 6 // NBD_CMD_WRITE_ZEROES
	CmdBlockStatus uint16 = 7 // NBD_CMD_BLOCK_STATUS
	CmdResize      uint16 = 8 // NBD_CMD_RESIZE (not supported)
)

// Command flags.
const (
	CmdFlagFUA        uint16 = 1 << 0 // NBD_CMD_FLAG_FUA
	CmdFlagNoHole     uint16 = 1 << 1 // NBD_CMD_FLAG_NO_HOLE
	CmdFlagDF         uint16 = 1 << 2 // NBD_CMD_FLAG_DF
	CmdFlagReqOne     uint16 = 1 << 3 // NBD_CMD_FLAG_REQ_ONE
	CmdFlagFastZero   uint16 = 1 << 4 // NBD_CMD_FLAG_FAST_ZERO
	CmdFlagPayloadLen uint16 = 1 << 5 // NBD_CMD_FLAG_PAYLOAD_LEN (not supported)
)

// Structured reply flags and chunk types.
const (
	ReplyFlagDone        uint16 = 1 << 0    // NBD_REPLY_FLAG_DONE
	ReplyTypeNone        uint16 = 0         // NBD_REPLY_TYPE_NONE
	ReplyTypeOffsetData  uint16 = 1         // NBD_REPLY_TYPE_OFFSET_DATA
	ReplyTypeOffsetHole  uint16 = 2         // NBD_REPLY_TYPE_OFFSET_HOLE
	ReplyTypeBlockStatus uint16 = 5         // NBD_REPLY_TYPE_BLOCK_STATUS
	ReplyTypeError       uint16 = 1<<15 + 1 // NBD_REPLY_TYPE_ERROR
	ReplyTypeErrorOffset uint16 = 1<<15 + 2 // NBD_REPLY_TYPE_ERROR_OFFSET
)

// base:allocation status flags.
const (
	StateHole uint32 = 1 << 0 // NBD_STATE_HOLE
	StateZero uint32 = 1 << 1 // NBD_STATE_ZERO
)

// MetaContextBaseAllocation is the only metadata context the server offers.
const MetaContextBaseAllocation = "base:allocation"

// Sizes of fixed wire structures.
const (
	greetingLen         = 18 // NBDMAGIC, IHAVEOPT, u16 handshake flags
	optionHeaderLen     = 16 // IHAVEOPT, u32 option, u32 length
	optionReplyLen      = 20 // magic, u32 option, u32 type, u32 length
	requestLen          = 28 // magic, u16 flags, u16 type, u64 cookie, u64 offset, u32 length
	simpleReplyLen      = 16 // magic, u32 error, u64 cookie
	chunkHeaderLen      = 20 // magic, u16 flags, u16 type, u64 cookie, u32 length
	exportNameZeroesLen = 124
	// replyHeadroom is reserved in front of read buffers so that a reply
	// header (simple, or structured OFFSET_DATA) can sit directly before
	// the data and leave in the same write.
	replyHeadroom = 32
)

// Limits. They bound what one client can make the server allocate.
const (
	// MaxPayload is the largest READ or WRITE payload served (2^25), and the
	// maximum advertised in NBD_INFO_BLOCK_SIZE.
	MaxPayload = 32 << 20
	// maxDrain is the largest rejected WRITE payload that is read and
	// discarded to stay in sync; a larger claim ends the connection.
	maxDrain = 2 * MaxPayload
	// maxOptionLen caps the data of one option during the handshake.
	maxOptionLen = 64 << 10
	// maxString is the protocol's limit for names, queries and messages.
	maxString = 4096
	// maxExtents caps the descriptors in one block status chunk (2^20).
	maxExtents = 1 << 20
	// connBudget caps the payload bytes (WRITE data read, READ data
	// buffered) in flight on one connection, or a quarter of
	// Server.BufferMemory if less; a request larger than what is free
	// proceeds once the connection holds nothing.
	connBudget = 2 * MaxPayload
)

var be = binary.BigEndian

// request is a decoded transmission request header.
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	offset uint64
	length uint32
}

// decodeRequest parses a request header. It reports false if the magic is
// wrong, which ends the connection: the stream cannot be resynchronised.
func decodeRequest(b *[requestLen]byte) (request, bool) {
	if be.Uint32(b[0:]) != MagicRequest {
		return request{}, false
	}
	return request{
		flags:  be.Uint16(b[4:]),
		typ:    be.Uint16(b[6:]),
		cookie: be.Uint64(b[8:]),
		offset: be.Uint64(b[16:]),
		length: be.Uint32(b[24:]),
	}, true
}

// putSimpleReply writes a simple reply header into b[:16].
func putSimpleReply(b []byte, errno Errno, cookie uint64) {
	be.PutUint32(b[0:], MagicSimple)
	be.PutUint32(b[4:], uint32(errno))
	be.PutUint64(b[8:], cookie)
}

// putChunkHeader writes a structured reply chunk header into b[:20].
func putChunkHeader(b []byte, flags, typ uint16, cookie uint64, length uint32) {
	be.PutUint32(b[0:], MagicStructured)
	be.PutUint16(b[4:], flags)
	be.PutUint16(b[6:], typ)
	be.PutUint64(b[8:], cookie)
	be.PutUint32(b[16:], length)
}

// appendOptionReply appends an option reply whose data is head then tail.
func appendOptionReply(b []byte, opt, typ uint32, head []byte, tail string) []byte {
	b = be.AppendUint64(b, MagicOptReply)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, typ)
	b = be.AppendUint32(b, uint32(len(head)+len(tail)))
	return append(append(b, head...), tail...)
}

// appendGreeting appends the fixed newstyle greeting.
func appendGreeting(b []byte) []byte {
	b = be.AppendUint64(b, MagicNBD)
	b = be.AppendUint64(b, MagicIHaveOpt)
	return be.AppendUint16(b, serverHandshakeFlags)
}

// Errno is an error value as sent in a reply's error field.
type Errno uint32

// Error values.
const (
	EPERM     Errno = 1   // NBD_EPERM
	EIO       Errno = 5   // NBD_EIO
	ENOMEM    Errno = 12  // NBD_ENOMEM
	EINVAL    Errno = 22  // NBD_EINVAL
	ENOSPC    Errno = 28  // NBD_ENOSPC
	EOVERFLOW Errno = 75  // NBD_EOVERFLOW
	ENOTSUP   Errno = 95  // NBD_ENOTSUP
	ESHUTDOWN Errno = 108 // NBD_ESHUTDOWN
)

// The rest of this file is the client's side of the wire (nbd/client uses
// it): the same constants and layouts, encoded and decoded the other way.

// Sizes of the fixed structures a client reads and writes.
const (
	GreetingLen         = greetingLen
	OptionReplyLen      = optionReplyLen
	RequestLen          = requestLen
	SimpleReplyLen      = simpleReplyLen
	ChunkHeaderLen      = chunkHeaderLen
	ExportNameZeroesLen = exportNameZeroesLen
	// ExportNameReplyLen is the reply to NBD_OPT_EXPORT_NAME before its
	// zeroes: u64 size, u16 transmission flags.
	ExportNameReplyLen = 10
	// MaxString is the protocol's limit for names and messages.
	MaxString = maxString
)

// DecodeGreeting parses the fixed newstyle greeting and returns the
// handshake flags. It reports false unless both magics are right.
func DecodeGreeting(b *[GreetingLen]byte) (flags uint16, ok bool) {
	if be.Uint64(b[0:]) != MagicNBD || be.Uint64(b[8:]) != MagicIHaveOpt {
		return 0, false
	}
	return be.Uint16(b[16:]), true
}

// AppendOption appends an option request (IHAVEOPT, option, length, data).
func AppendOption(b []byte, opt uint32, data []byte) []byte {
	b = be.AppendUint64(b, MagicIHaveOpt)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// AppendInfoRequest appends the data of NBD_OPT_INFO or NBD_OPT_GO: the
// export name and the information types asked for.
func AppendInfoRequest(b []byte, name string, infos ...uint16) []byte {
	b = be.AppendUint32(b, uint32(len(name)))
	b = append(b, name...)
	b = be.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = be.AppendUint16(b, i)
	}
	return b
}

// OptionReply is the header of an option reply; Length bytes of data
// follow it.
type OptionReply struct {
	Option, Type, Length uint32
}

// DecodeOptionReply parses an option reply header. It reports false if
// the magic is wrong.
func DecodeOptionReply(b *[OptionReplyLen]byte) (OptionReply, bool) {
	if be.Uint64(b[0:]) != MagicOptReply {
		return OptionReply{}, false
	}
	return OptionReply{Option: be.Uint32(b[8:]), Type: be.Uint32(b[12:]), Length: be.Uint32(b[16:])}, true
}

// ExportInfoData is the payload of NBD_INFO_EXPORT (also the reply to
// NBD_OPT_EXPORT_NAME).
type ExportInfoData struct {
	Size  uint64
	Flags uint16 // transmission flags
}

// InfoBlockSizes is the payload of NBD_INFO_BLOCK_SIZE.
type InfoBlockSizes struct {
	Min, Preferred, MaxPayload uint32
}

// DecodeInfo parses the data of an NBD_REP_INFO reply: its type, and the
// export or block size information when it is one of those and well
// formed. ok is false when the data is too short for its type or the
// length is wrong; unknown types are ok and carry nothing.
func DecodeInfo(data []byte) (typ uint16, exp ExportInfoData, sizes InfoBlockSizes, ok bool) {
	if len(data) < 2 {
		return 0, exp, sizes, false
	}
	typ = be.Uint16(data)
	switch typ {
	case InfoExport:
		if len(data) != 12 {
			return typ, exp, sizes, false
		}
		exp = ExportInfoData{Size: be.Uint64(data[2:]), Flags: be.Uint16(data[10:])}
	case InfoBlockSize:
		if len(data) != 14 {
			return typ, exp, sizes, false
		}
		sizes = InfoBlockSizes{Min: be.Uint32(data[2:]), Preferred: be.Uint32(data[6:]), MaxPayload: be.Uint32(data[10:])}
	}
	return typ, exp, sizes, true
}

// DecodeExportNameReply parses the reply to NBD_OPT_EXPORT_NAME (without
// the zeroes that may follow it).
func DecodeExportNameReply(b *[ExportNameReplyLen]byte) ExportInfoData {
	return ExportInfoData{Size: be.Uint64(b[0:]), Flags: be.Uint16(b[8:])}
}

// AppendRequest appends a request header; a WRITE's payload follows it.
func AppendRequest(b []byte, flags, typ uint16, cookie, off uint64, length uint32) []byte {
	b = be.AppendUint32(b, MagicRequest)
	b = be.AppendUint16(b, flags)
	b = be.AppendUint16(b, typ)
	b = be.AppendUint64(b, cookie)
	b = be.AppendUint64(b, off)
	return be.AppendUint32(b, length)
}

// SimpleReply is a decoded simple reply header.
type SimpleReply struct {
	Errno  Errno
	Cookie uint64
}

// DecodeSimpleReply parses a simple reply header. It reports false if the
// magic is not NBD_SIMPLE_REPLY_MAGIC.
func DecodeSimpleReply(b *[SimpleReplyLen]byte) (SimpleReply, bool) {
	if be.Uint32(b[0:]) != MagicSimple {
		return SimpleReply{}, false
	}
	return SimpleReply{Errno: Errno(be.Uint32(b[4:])), Cookie: be.Uint64(b[8:])}, true
}

// ChunkHeader is a decoded structured reply chunk header; Length bytes of
// payload follow it.
type ChunkHeader struct {
	Flags, Type uint16
	Cookie      uint64
	Length      uint32
}

// DecodeChunkHeader parses a structured reply chunk header. It reports
// false if the magic is not NBD_STRUCTURED_REPLY_MAGIC.
func DecodeChunkHeader(b *[ChunkHeaderLen]byte) (ChunkHeader, bool) {
	if be.Uint32(b[0:]) != MagicStructured {
		return ChunkHeader{}, false
	}
	return ChunkHeader{Flags: be.Uint16(b[4:]), Type: be.Uint16(b[6:]), Cookie: be.Uint64(b[8:]), Length: be.Uint32(b[16:])}, true
}
