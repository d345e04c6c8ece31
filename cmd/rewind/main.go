package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"
	"github.com/rewind-dev/rewind/catalog"
	"github.com/rewind-dev/rewind/catalog/api"
	"github.com/rewind-dev/rewind/mount"
)

// cli is the whole command line.
type cli struct {
	Data    string `help:"Data directory (default /var/lib/rewind for root, else ~/.local/share/rewind)." env:"REWIND_DATA" type:"path" placeholder:"DIR"`
	JSON    bool   `help:"Print one JSON document (or one per line for streams) and nothing else on standard output." name:"json"`
	Verbose bool   `help:"Log more." short:"v"`
	// Compression applies to what this process writes; every chunk records
	// its own codec, so a data directory can hold both.
	Compression string `help:"Compression of new chunks: zstd (smaller), s2 (faster) or none." env:"REWIND_COMPRESSION" default:"zstd" enum:"zstd,s2,none"`
	// NoParity is for measuring what parity costs (bench/integrity.sh):
	// the packs this process writes get no parity, ever.
	NoParity bool `help:"Write new packs without Reed-Solomon parity, and write no missing parity file (damage to those packs cannot be repaired; for measuring what parity costs)." env:"REWIND_NO_PARITY" name:"no-parity"`
	// Store puts the packs and a copy of the index in an object store;
	// the data directory remembers it.
	Store      string `help:"Keep the packs and a copy of the index in an object store: s3://BUCKET[/PREFIX] (endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION) or a directory. The data directory remembers it; an empty one brings the index down from it." env:"REWIND_STORE" placeholder:"URL"`
	StoreCache Size   `help:"Local disk for blocks of packs read from the object store." default:"1GiB" placeholder:"SIZE" name:"store-cache"`
	ReadOnly   bool   `help:"Open an object store as a reader: the index is brought down afresh, nothing is written." name:"read-only"`
	TakeOver   bool   `help:"Take an object store over from another data directory whose lease has not lapsed (its machine is gone); uploads start 26 s later, once the old writer has surely stopped." name:"take-over"`

	Import importCmd `cmd:"" help:"Record a raw image or block device as a new version of VOLUME."`
	Volume volumeCmd `cmd:"" help:"List, create and remove volumes."`
	Log    logCmd    `cmd:"" help:"One line per recorded version: time, blocks, bytes."`
	Diff   diffCmd   `cmd:"" help:"The byte ranges that differ between two instants."`
	Point  pointCmd  `cmd:"" help:"Recovery point labels."`

	Retention retentionCmd `cmd:"" help:"How much history prune keeps, per volume."`
	Prune     pruneCmd     `cmd:"" help:"Thin volumes' history by their retention policies (labels, clones' fork instants and instants in use stay)."`
	Verify    verifyCmd    `cmd:"" help:"Check every chunk against its checksums and parity, repairing what parity rebuilds; --fsck checks a recovery point's filesystems, --boot starts it in a VM."`
	Replicate replicateCmd `cmd:"" help:"Copy the store (or some volumes) to a second site, an s3:// bucket or a directory, that rewind --store serves; what arrived before is not sent again."`
	GC        gcCmd        `cmd:"" name:"gc" help:"Free the chunks no version references (after prune or volume rm), while everything keeps serving."`

	Export exportCmd `cmd:"" help:"Restore VOLUME@WHEN into a file or block device (sparse where it can; - is standard output)."`
	Clone  cloneCmd  `cmd:"" help:"A writable volume that starts as VOLUME@WHEN; history never changes."`
	Stats  statsCmd  `cmd:"" help:"Logical and stored bytes, dedup and compression ratios."`
	Serve  serveCmd  `cmd:"" help:"The daemon: NBD exports, the FUSE tree, metrics, and the socket other commands use."`
	Mount  mountCmd  `cmd:"" help:"Mount one view as DIR/disk.img, or its files with --files (carried out by the daemon)."`
	Umount umountCmd `cmd:"" help:"Unmount what rewind mount mounted."`

	Console consoleCmd `cmd:"" help:"Print the web console's sign-in link (the daemon's --http address, with the API token)."`

	Recover recoverCmd `cmd:"" help:"Instant recovery: serve VOLUME@WHEN now, copy it to production in the background, cut over (carried out by the daemon)."`

	Protect   protectCmd   `cmd:"" help:"Serve a production disk as the writable export VOLUME and record every write with its own time (carried out by the daemon)."`
	Unprotect unprotectCmd `cmd:"" help:"End a protection: the disk is no longer served; the volume keeps its history."`
}

// env is what every command's Run receives.
type env struct {
	ctx     context.Context
	globals *cli
	dataDir string
}

// api returns the catalog: the daemon's, through its socket, when one
// runs on the data directory; else the data directory opened in-process.
// A socket that refuses this user is an answer, not a reason to open the
// store in-process. A data directory that does not exist is an error
// (a mistyped --data would otherwise get an empty catalog made for it),
// but for a command that makes one (import, volume create) or one given
// --store, whose index comes down from the bucket.
func (e *env) api() (catalog.API, func(), error) { return e.openAPI(false) }

// apiCreating is api for a command that makes the data directory when it
// is not there.
func (e *env) apiCreating() (catalog.API, func(), error) { return e.openAPI(true) }

func (e *env) openAPI(create bool) (catalog.API, func(), error) {
	c, err := api.Dial(filepath.Join(e.dataDir, "rewind.sock"))
	if err == nil {
		return c, c.Close, nil
	}
	if errors.Is(err, api.ErrForbidden) {
		return nil, nil, err
	}
	if !create && e.globals.Store == "" {
		if _, err := os.Stat(e.dataDir); errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("no data directory at %s: give --data (or REWIND_DATA) the directory that rewind serve or import uses; rewind import or volume create makes a new one", e.dataDir)
		}
	}
	svc, err := catalog.Open(e.catalogOptions(e.logger()))
	if errors.Is(err, os.ErrPermission) {
		return nil, nil, fmt.Errorf("open the data directory %s: permission denied; run as its owner or root, or choose another with --data", e.dataDir)
	}
	if err != nil {
		return nil, nil, err
	}
	return svc, func() { svc.Close() }, nil
}

// catalogOptions are the options of opening the data directory in this
// process.
func (e *env) catalogOptions(log *slog.Logger) catalog.Options {
	g := e.globals
	o := catalog.Options{Dir: e.dataDir, Logger: log, Compression: g.Compression, NoParity: g.NoParity,
		Store: g.Store, StoreCacheBytes: int64(g.StoreCache), ReadOnly: g.ReadOnly, TakeOver: g.TakeOver}
	if !g.JSON {
		_, o.OnRestore = newProgress("index", true)
	}
	return o
}

func (e *env) logger() *slog.Logger {
	level := slog.LevelInfo
	if e.globals.Verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// print writes v as JSON with --json, else calls text.
func (e *env) print(v any, text func()) error {
	if e.globals.JSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	text()
	return nil
}

func main() {
	var c cli
	parser := kong.Must(&c,
		kong.Name("rewind"),
		kong.Description("rewind keeps every write of your disks as a timeline and serves any second of it: as NBD exports, FUSE images and writable clones."),
		kong.UsageOnError(),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	)
	kctx, err := parser.Parse(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "rewind: %v\n", err)
		os.Exit(2)
	}
	if kctx.Command() == "serve" {
		// The daemon serves the files under loop devices (mount --files);
		// see mount/doc.go. Parsing has no side effects, so this is still
		// first: the program re-executes itself here, flagged.
		if err := mount.ExecAsIOFlusher(); err != nil {
			(&env{globals: &c}).logger().Warn("running without PR_SET_IO_FLUSHER: a loop device on a rewind mount may deadlock under memory pressure", "err", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dataDir := c.Data
	if dataDir == "" {
		dataDir = catalog.DefaultDataDir()
	}
	e := &env{ctx: ctx, globals: &c, dataDir: dataDir}
	if err := kctx.Run(e); err != nil {
		fmt.Fprintf(os.Stderr, "rewind: %s\n", oneLine(err))
		if errors.Is(err, context.Canceled) {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

// oneLine keeps an error message to one line.
func oneLine(err error) string {
	s := err.Error()
	for i, r := range s {
		if r == '\n' {
			return s[:i]
		}
	}
	return s
}

// absPath makes a file argument absolute, so the daemon (running
// elsewhere) finds it; "-" and URIs stay as they are.
func absPath(p string) string {
	if p == "-" || strings.Contains(p, "://") {
		return p
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
