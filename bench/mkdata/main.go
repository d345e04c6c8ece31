// Command mkdata makes the deterministic test and benchmark data behind
// scripts/mkimage.sh: a tree of mixed files for `mkfs.ext4 -d`, a realistic
// second version of such an image, and a count of the blocks two images
// differ in. Everything it writes depends only on its arguments and seed.
//
//	mkdata tree   -seed N -bytes SIZE DIR   fill DIR with about SIZE bytes of files
//	mkdata change -seed N -pct P IMG        change about P% of the file data in IMG
//	mkdata diff   -block 65536 A B          count the blocks that differ
//
// It is a tool for scripts, not part of rewind.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
)

// epoch is the time stamped on every file and inode mkdata makes
// (2026-01-01T00:00:00Z), so that images are identical bit for bit.
const epoch = 1767225600

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "tree":
		err = runTree(os.Args[2:])
	case "change":
		err = runChange(os.Args[2:])
	case "diff":
		err = runDiff(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "mkdata %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: mkdata tree -seed N -bytes SIZE DIR | change -seed N -pct P IMG | diff [-block N] A B")
	os.Exit(2)
}

// parse parses a subcommand's flags and returns its positional arguments,
// which must number exactly want.
func parse(fs *flag.FlagSet, args []string, want int) ([]string, error) {
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() != want {
		return nil, fmt.Errorf("want %d arguments, got %d", want, fs.NArg())
	}
	return fs.Args(), nil
}

// newRand returns a generator determined by seed and a stream name, so that
// each file draws from its own stream and adding one file changes no other.
func newRand(seed uint64, stream string) *rand.Rand {
	var key [32]byte
	copy(key[:8], strconv.AppendUint(nil, seed, 16))
	copy(key[8:], stream)
	return rand.New(rand.NewChaCha8(key))
}

// parseSize accepts a byte count with an optional K, M or G (binary) suffix.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(s), "B"), "I")
	switch {
	case strings.HasSuffix(t, "K"):
		mult = 1 << 10
	case strings.HasSuffix(t, "M"):
		mult = 1 << 20
	case strings.HasSuffix(t, "G"):
		mult = 1 << 30
	}
	if mult > 1 {
		t = t[:len(t)-1]
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q: want bytes or a number with K, M or G", s)
	}
	return n * mult, nil
}
