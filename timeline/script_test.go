package timeline

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rewind-dev/rewind/blockstore"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the golden output of script tests")

// The script tests read testdata/*.txt: blocks of a command line, "----",
// and the expected output, separated by blank lines. Block size is 4 KiB;
// block contents are written as letters: "a" is a block of 'a' bytes, "0"
// is a block of zeroes, "ab" (in read output) lists two blocks.
//
// Commands:
//
//	import vol=V at=T blocks=a,b,0,c   new version of V at time T
//	clock t=T                          the clock reads T from now on
//	clone vol=V at=T as=C              clone V as of T into C
//	write vol=C block=N data=x [len=L] write block N (or L bytes at its start)
//	zero vol=C block=N count=K         write zeroes over K blocks
//	read vol=V [at=T]                  the blocks of V as of T (head if omitted)
//	extents vol=V at=T                 data and holes
//	log vol=V                          the versions of V
//	diff vol=V t1=A t2=B               byte ranges that differ
//	volumes                            every volume
//	crash                              lose what was not synced, reopen
//	reopen                             close cleanly and reopen
func TestScripts(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) == 0 {
		t.Fatal("no script tests in testdata")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { runScript(t, f) })
	}
}

type scriptEnv struct {
	t     *testing.T
	fs    *vfs.MemFS
	wrap  func(vfs.FS) vfs.FS // if set, what the store sees of fs
	guard *Guard
	db    *pebble.DB
	bs    *blockstore.Store
	s     *Store
	clock int64
	// rangeBlocks, if set, is the least run of whole blocks that zeroing
	// records as a range record (Store.rangeBlocks).
	rangeBlocks int64
}

// open opens the store as the daemon does: on a Guard, with a reserve.
func (e *scriptEnv) open() {
	e.t.Helper()
	var fs vfs.FS = e.fs
	if e.wrap != nil {
		fs = e.wrap(fs)
	}
	e.guard = NewGuard(fs, "reserve", 1<<20, nil)
	db, err := pebble.Open("db", PebbleOptions(e.guard, nil))
	if err != nil {
		e.t.Fatal(err)
	}
	bs, err := blockstore.Open(blockstore.Options{FS: fs, Dir: "packs", DB: db, Codec: blockstore.CodecZstd})
	if err != nil {
		e.t.Fatal(err)
	}
	s, err := Open(Options{DB: db, Chunks: bs, Guard: e.guard, Now: func() time.Time { return time.Unix(0, e.clock) }})
	if err != nil {
		e.t.Fatal(err)
	}
	if e.rangeBlocks != 0 {
		s.rangeBlocks = e.rangeBlocks
	}
	e.db, e.bs, e.s = db, bs, s
}

func (e *scriptEnv) close() {
	e.guard.Close()
	e.s.Close()
	e.bs.StopReadingIndex()
	e.db.Close()
	e.bs.Close()
}

func runScript(t *testing.T, path string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	e := &scriptEnv{t: t, fs: vfs.NewCrashableMem()}
	e.open()
	defer func() { e.close() }()
	var out strings.Builder
	for _, block := range strings.Split(strings.TrimSpace(string(raw)), "\n\n") {
		cmd, want, _ := strings.Cut(block+"\n", "\n----\n")
		cmd = strings.TrimSpace(cmd)
		got := e.run(cmd)
		if !*rewrite && strings.TrimSpace(got) != strings.TrimSpace(want) {
			t.Errorf("%s:\n%s\ngot:\n%s\nwant:\n%s", path, cmd, got, want)
		}
		fmt.Fprintf(&out, "%s\n----\n%s\n\n", cmd, strings.TrimSpace(got))
	}
	if *rewrite {
		os.WriteFile(path, []byte(strings.TrimSpace(out.String())+"\n"), 0o644)
	}
}

const testBS = 4096

func (e *scriptEnv) run(line string) string {
	f := strings.Fields(line)
	args := map[string]string{}
	for _, kv := range f[1:] {
		k, v, _ := strings.Cut(kv, "=")
		args[k] = v
	}
	num := func(k string) int64 {
		v, err := strconv.ParseInt(args[k], 10, 64)
		if err != nil {
			e.t.Fatalf("%s: bad %s=%q", line, k, args[k])
		}
		return v
	}
	ctx := context.Background()
	vol := func() *Volume {
		v, err := e.s.Volume(args["vol"])
		if err != nil {
			e.t.Fatalf("%s: %v", line, err)
		}
		return v
	}
	switch f[0] {
	case "clock":
		e.clock = num("t")
		return "ok"
	case "import":
		blocks := strings.Split(args["blocks"], ",")
		img := make([]byte, len(blocks)*testBS)
		for i, b := range blocks {
			if b != "0" {
				copy(img[i*testBS:], bytes.Repeat([]byte(b[:1]), testBS))
			}
		}
		r, err := e.s.Import(ctx, ImportOptions{Name: args["vol"], Source: bytes.NewReader(img),
			Size: int64(len(img)), At: num("at"), BlockSize: testBS})
		if err != nil {
			return "error: " + err.Error()
		}
		return fmt.Sprintf("version %d: %d blocks, %d bytes, %d stored", r.Time, r.Blocks, r.Bytes, r.Stored)
	case "clone":
		c, err := e.s.Clone(args["vol"], num("at"), args["as"])
		if err != nil {
			return "error: " + err.Error()
		}
		return fmt.Sprintf("clone %s of %s at %d, created %d", c.Name, args["vol"], c.ForkTime, c.First)
	case "write", "zero":
		v, err := e.s.Head(vol().ID)
		if err != nil {
			return "error: " + err.Error()
		}
		off := num("block") * testBS
		if f[0] == "zero" {
			err = v.WriteZeroes(off, num("count")*testBS)
		} else {
			n := int64(testBS)
			if args["len"] != "" {
				n = num("len")
			}
			_, err = v.WriteAt(bytes.Repeat([]byte(args["data"][:1]), int(n)), off)
		}
		if err != nil {
			return "error: " + err.Error()
		}
		return fmt.Sprintf("ok at %d", v.Time())
	case "flush":
		if err := e.s.Flush(); err != nil {
			return "error: " + err.Error()
		}
		return "ok"
	case "read", "extents":
		var v *View
		var err error
		if args["at"] == "" {
			v, err = e.s.Head(vol().ID)
		} else {
			v, err = e.s.ViewAt(vol().ID, num("at"))
		}
		if err != nil {
			return "error: " + err.Error()
		}
		defer v.Close()
		if f[0] == "extents" {
			ex, err := v.Extents(0, v.Size())
			if err != nil {
				return "error: " + err.Error()
			}
			var sb strings.Builder
			for _, x := range ex {
				fmt.Fprintf(&sb, "%d+%d hole=%v\n", x.Offset/testBS, x.Length/testBS, x.Hole)
			}
			return sb.String()
		}
		return e.describe(v)
	case "log":
		vs, err := e.s.Log(vol().ID, 0, 1<<62)
		if err != nil {
			return "error: " + err.Error()
		}
		var sb strings.Builder
		for _, x := range vs {
			fmt.Fprintf(&sb, "%d %s blocks=%d bytes=%d size=%d\n", x.Time, x.Kind, x.Blocks, x.Bytes, x.Size)
		}
		return sb.String()
	case "diff":
		rs, err := e.s.Diff(vol().ID, num("t1"), num("t2"))
		if err != nil {
			return "error: " + err.Error()
		}
		var sb strings.Builder
		for _, r := range rs {
			fmt.Fprintf(&sb, "blocks %d+%d\n", r.Offset/testBS, r.Length/testBS)
		}
		return sb.String()
	case "volumes":
		var sb strings.Builder
		for _, v := range e.s.Volumes() {
			fmt.Fprintf(&sb, "%s kind=%s size=%d versions=%d first=%d last=%d parent=%d fork=%d\n",
				v.Name, v.Kind, v.Size, v.Versions, v.First, v.Last, v.Parent, v.ForkTime)
		}
		return sb.String()
	case "crash":
		crashed := e.fs.CrashClone(vfs.CrashCloneCfg{})
		e.close()
		e.fs = crashed
		e.open()
		return "ok"
	case "reopen":
		e.close()
		e.open()
		return "ok"
	}
	e.t.Fatalf("unknown command %q", line)
	return ""
}

// describe prints a view's blocks as letters: the byte a block is filled
// with, or "?" for mixed contents.
func (e *scriptEnv) describe(v *View) string {
	buf := make([]byte, v.Size())
	if _, err := v.ReadAt(buf, 0); err != nil {
		return "error: " + err.Error()
	}
	var sb strings.Builder
	for i := 0; i < len(buf); i += testBS {
		blk := buf[i:min(i+testBS, len(buf))]
		switch {
		case isZero(blk):
			sb.WriteByte('0')
		case bytes.Count(blk, blk[:1]) == len(blk):
			sb.WriteByte(blk[0])
		default:
			sb.WriteString("[" + describeMixed(blk) + "]")
		}
	}
	return sb.String()
}

func describeMixed(b []byte) string {
	var parts []string
	for i := 0; i < len(b); {
		j := i
		for j < len(b) && b[j] == b[i] {
			j++
		}
		c := string(b[i])
		if b[i] == 0 {
			c = "0"
		}
		parts = append(parts, fmt.Sprintf("%s*%d", c, j-i))
		i = j
	}
	return strings.Join(parts, " ")
}
