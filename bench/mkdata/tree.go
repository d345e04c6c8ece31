package main

import (
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// The mix of a tree, as shares of its bytes. Random data stands for
// databases, media and compressed archives; the duplicate for a backup copy
// kept on the same disk; text and logs compress well.
const (
	shareBase   = 0.16 // db/base.dat, one large random file
	shareRandom = 0.32 // db/t-NNN.dat, random files
	shareDup    = 0.16 // backup/base.dat.bak, a copy of db/base.dat
	shareText   = 0.20 // home/uN/*/NNN.txt and etc/*.conf
	shareLogs   = 0.16 // var/log/*.log
)

func runTree(args []string) error {
	fset := flag.NewFlagSet("tree", flag.ContinueOnError)
	seed := fset.Uint64("seed", 1, "seed of every generator")
	size := fset.String("bytes", "", "total bytes of files to write")
	pos, err := parse(fset, args, 1)
	if err != nil {
		return err
	}
	total, err := parseSize(*size)
	if err != nil {
		return err
	}
	if total < 1<<20 {
		return fmt.Errorf("-bytes %s: want at least 1M", *size)
	}
	t := &tree{dir: pos[0], seed: *seed, vocab: newVocabulary(*seed)}
	if err := t.build(total); err != nil {
		return err
	}
	return stampTimes(t.dir)
}

type tree struct {
	dir   string
	seed  uint64
	vocab *vocabulary
}

func (t *tree) build(total int64) error {
	base := int64(float64(total) * shareBase)
	steps := []func() error{
		func() error {
			return t.file("db/base.dat", func(w io.Writer, r *rand.Rand) error { return writeRandom(w, r, base) })
		},
		func() error { return t.randomFiles(int64(float64(total) * shareRandom)) },
		func() error { return t.copy("db/base.dat", "backup/base.dat.bak") },
		func() error { return t.configFiles(int64(float64(total) * shareText * 0.05)) },
		func() error { return t.textFiles(int64(float64(total) * shareText * 0.95)) },
		func() error { return t.logFiles(int64(float64(total) * shareLogs)) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// file creates name (relative to the tree) with contents from fill, drawn
// from a generator of its own.
func (t *tree) file(name string, fill func(io.Writer, *rand.Rand) error) error {
	path := filepath.Join(t.dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := fill(f, newRand(t.seed, name)); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

func (t *tree) copy(src, dst string) error {
	in, err := os.Open(filepath.Join(t.dir, src))
	if err != nil {
		return err
	}
	defer in.Close()
	return t.file(dst, func(w io.Writer, _ *rand.Rand) error {
		_, err := io.Copy(w, in)
		return err
	})
}

// sizes splits budget into sizes drawn log-uniformly from [lo, hi], hi
// capped at a quarter of the budget so that small trees still get several
// files. The last size takes what is left.
func sizes(r *rand.Rand, budget, lo, hi int64) []int64 {
	hi = max(lo, min(hi, budget/4))
	var out []int64
	for budget > 0 {
		n := int64(math.Exp(math.Log(float64(lo)) + r.Float64()*(math.Log(float64(hi))-math.Log(float64(lo)))))
		n = n &^ 511
		if budget-n < lo {
			n = budget
		}
		out = append(out, n)
		budget -= n
	}
	return out
}

func (t *tree) randomFiles(budget int64) error {
	for i, n := range sizes(newRand(t.seed, "db sizes"), budget, 256<<10, 32<<20) {
		name := fmt.Sprintf("db/t-%03d.dat", i)
		if err := t.file(name, func(w io.Writer, r *rand.Rand) error { return writeRandom(w, r, n) }); err != nil {
			return err
		}
	}
	return nil
}

func (t *tree) textFiles(budget int64) error {
	folders := []string{"docs", "notes", "mail", "src"}
	r := newRand(t.seed, "text layout")
	for i, n := range sizes(newRand(t.seed, "text sizes"), budget, 4<<10, 4<<20) {
		name := fmt.Sprintf("home/u%d/%s/%04d.txt", r.IntN(8), folders[r.IntN(len(folders))], i)
		if err := t.file(name, func(w io.Writer, r *rand.Rand) error { return writeText(w, t.vocab, r, n) }); err != nil {
			return err
		}
	}
	return nil
}

func (t *tree) configFiles(budget int64) error {
	for i, n := range sizes(newRand(t.seed, "conf sizes"), budget, 256, 16<<10) {
		name := fmt.Sprintf("etc/app%d/%03d.conf", i%10, i)
		if err := t.file(name, func(w io.Writer, r *rand.Rand) error { return writeText(w, t.vocab, r, n) }); err != nil {
			return err
		}
	}
	return nil
}

func (t *tree) logFiles(budget int64) error {
	services := []string{"nginx", "app", "worker", "db", "cron", "auth"}
	for i, n := range sizes(newRand(t.seed, "log sizes"), budget, 256<<10, 16<<20) {
		name := fmt.Sprintf("var/log/%s-%02d.log", services[i%len(services)], i)
		start := int64(epoch - 30*86400 + i*3600)
		if err := t.file(name, func(w io.Writer, r *rand.Rand) error { return writeLog(w, r, n, start) }); err != nil {
			return err
		}
	}
	return nil
}

// stampTimes gives every file and directory below dir the fixed time,
// deepest first so that no later change touches a directory's stamp.
// mkfs.ext4 -d copies them into the image.
func stampTimes(dir string) error {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	})
	if err != nil {
		return err
	}
	slices.Reverse(paths)
	at := time.Unix(epoch, 0)
	for _, p := range paths {
		if err := os.Chtimes(p, at, at); err != nil {
			return err
		}
	}
	return nil
}
