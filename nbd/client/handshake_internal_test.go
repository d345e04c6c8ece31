package client

import (
	"context"
	"errors"
	"testing"

	"github.com/rewind-dev/rewind/nbd"
)

// exportNameReply is the reply to NBD_OPT_EXPORT_NAME, with zeroes.
func exportNameReply(size uint64, flags uint16, zeroes bool) []byte {
	b := be.AppendUint16(be.AppendUint64(nil, size), flags)
	if zeroes {
		b = append(b, make([]byte, nbd.ExportNameZeroesLen)...)
	}
	return b
}

var fuzzTarget = Target{Network: "unix", Address: "test", Export: "disk"}

// A server that answers NBD_OPT_GO with NBD_REP_ERR_UNSUP gets
// NBD_OPT_EXPORT_NAME; one without fixed newstyle gets it at once, and
// sends the 124 zeroes the client cannot decline.
func TestExportNameFallback(t *testing.T) {
	goLen := 16 + len(nbd.AppendInfoRequest(nil, "disk", nbd.InfoBlockSize))
	nameLen := 16 + len("disk")
	flags := nbd.FlagHasFlags | nbd.FlagSendFlush | nbd.FlagReadOnly

	script := append(append(greeting(), srReply(true)...), optReply(nbd.OptGo, nbd.RepErrUnsup, nil)...)
	script = append(script, exportNameReply(1<<30, flags, false)...)
	c, err := Handshake(context.Background(), pipeServer(t, script, 4+16+goLen+nameLen, nil), fuzzTarget, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Size() != 1<<30 || c.Info().Flags() != flags || c.Info().MaxPayload() != nbd.MaxPayload || !c.structured {
		t.Fatalf("size %d flags %#x max %d", c.Size(), c.Info().Flags(), c.Info().MaxPayload())
	}
	c.Close()

	old := append(be.AppendUint64(be.AppendUint64(nil, nbd.MagicNBD), nbd.MagicIHaveOpt), 0, 0)
	old = append(old, exportNameReply(4096, flags, true)...)
	c, err = Handshake(context.Background(), pipeServer(t, old, 4+nameLen, nil), fuzzTarget, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Size() != 4096 {
		t.Fatalf("size %d", c.Size())
	}
	c.Close()

	// Refused by hanging up: an unknown export, in one line.
	_, err = Handshake(context.Background(), pipeServer(t, old[:18], 4+nameLen, nil), fuzzTarget, Options{})
	if !errors.Is(err, ErrUnknownExport) {
		t.Fatalf("EXPORT_NAME refused: %v", err)
	}
	// Writable and read-only.
	_, err = Handshake(context.Background(), pipeServer(t, old, 4+nameLen, nil), fuzzTarget, Options{Writable: true})
	if !errors.Is(err, ErrReadOnly) {
		t.Fatalf("read-only export with Writable: %v", err)
	}
}

// Any other error reply to GO names the server's message.
func TestGoRefused(t *testing.T) {
	script := append(append(greeting(), srReply(false)...), optReply(nbd.OptGo, nbd.RepErrPolicy, []byte("not\nfor you"))...)
	_, err := Handshake(context.Background(), pipeServer(t, script, 0, nil), fuzzTarget, Options{})
	if !errors.Is(err, ErrRefused) || err.Error() != "nbd client: the server refused the export: nbd+unix:///disk?socket=test: not for you" {
		t.Fatalf("GO refused by policy: %v", err)
	}
}
