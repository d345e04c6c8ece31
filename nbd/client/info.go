package client

import "github.com/rewind-dev/rewind/nbd"

// Info describes the export a Conn is connected to.
type Info struct {
	size       uint64
	flags      uint16
	sizes      nbd.InfoBlockSizes
	maxPayload uint32
	meta       map[string]uint32 // selected metadata contexts, by name
}

// MetaContext reports whether the server selected the metadata context
// name for BLOCK_STATUS.
func (i Info) MetaContext(name string) bool {
	_, ok := i.meta[name]
	return ok
}

// Size is the export's size in bytes.
func (i Info) Size() int64 { return int64(i.size) }

// Flags are the transmission flags the server sent (nbd.FlagReadOnly...).
func (i Info) Flags() uint16 { return i.flags }

// BlockSizes are the server's constraints (defaults 1, 4096 and 32 MiB
// when it sent none).
func (i Info) BlockSizes() nbd.InfoBlockSizes { return i.sizes }

// MaxPayload is the largest READ or WRITE the client sends: the server's
// maximum, at most nbd.MaxPayload, a multiple of the minimum block size.
func (i Info) MaxPayload() int { return int(i.maxPayload) }

func (i Info) has(f uint16) bool { return i.flags&f != 0 }

func (i Info) ReadOnly() bool       { return i.has(nbd.FlagReadOnly) }
func (i Info) CanFlush() bool       { return i.has(nbd.FlagSendFlush) }
func (i Info) CanFUA() bool         { return i.has(nbd.FlagSendFUA) }
func (i Info) CanTrim() bool        { return i.has(nbd.FlagSendTrim) }
func (i Info) CanWriteZeroes() bool { return i.has(nbd.FlagSendWriteZeroes) }
func (i Info) CanFastZero() bool    { return i.has(nbd.FlagSendFastZero) && i.CanWriteZeroes() }
func (i Info) CanMultiConn() bool   { return i.has(nbd.FlagCanMultiConn) }
