package main

import (
	"bytes"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// How a change is shared out. Each mimics what a running system does to its
// filesystem between two backups:
//
//   - shareInPlace: a database rewrites pages of its files in place (runs of
//     64 KiB to 1 MiB at 64 KiB-aligned file offsets); the blocks stay where
//     they were.
//   - shareRotate: logrotate renames X.log to X.log.1 (dropping an older
//     X.log.1) and the service starts a fresh X.log in newly allocated
//     blocks.
//   - the rest: an editor saves text files: a new inode and new blocks hold
//     the edited text, the old blocks are freed but keep their bytes, as on
//     a real disk.
//
// Files named *.dat, *.log and *.txt are chosen for each; an image without
// them gets in-place rewrites of whatever files it has.
const (
	shareInPlace = 0.60
	shareRotate  = 0.25
	changeRun    = 64 << 10
)

func runChange(args []string) error {
	fset := flag.NewFlagSet("change", flag.ContinueOnError)
	seed := fset.Uint64("seed", 2, "seed of every generator; also dates the change (epoch + seed days)")
	pct := fset.Float64("pct", 5, "share of the file data to change, in percent")
	pos, err := parse(fset, args, 1)
	if err != nil {
		return err
	}
	if *pct <= 0 || *pct > 50 {
		return fmt.Errorf("-pct %g: want more than 0 and at most 50", *pct)
	}
	im := &image{path: pos[0], now: epoch + int64(*seed)*86400}
	c := &change{im: im, seed: *seed, r: newRand(*seed, "change")}
	if err := c.plan(*pct); err != nil {
		return err
	}
	return c.apply()
}

type change struct {
	im        *image
	seed      uint64
	r         *rand.Rand
	bs        int64
	files     []file
	budget    [3]int64 // in place, rotate, edit
	requests  []string // for one debugfs -w session, after the in-place writes
	tmp       string
	changed   int64
	summaries []string
}

func (c *change) plan(pct float64) error {
	var err error
	if c.bs, err = c.im.blockSize(); err != nil {
		return err
	}
	if c.files, err = c.im.files("/"); err != nil {
		return err
	}
	var total int64
	for _, f := range c.files {
		total += f.size
	}
	if total == 0 {
		return fmt.Errorf("%s holds no file data to change", c.im.path)
	}
	budget := int64(float64(total) * pct / 100)
	c.budget = [3]int64{int64(float64(budget) * shareInPlace), int64(float64(budget) * shareRotate)}
	c.budget[2] = budget - c.budget[0] - c.budget[1]
	if len(c.withSuffix(".log")) == 0 {
		c.budget[0] += c.budget[1]
		c.budget[1] = 0
	}
	if len(c.withSuffix(".txt")) == 0 {
		c.budget[0] += c.budget[2]
		c.budget[2] = 0
	}
	return nil
}

func (c *change) withSuffix(suffix string) []file {
	var out []file
	for _, f := range c.files {
		if strings.HasSuffix(f.path, suffix) {
			out = append(out, f)
		}
	}
	return out
}

func (c *change) apply() error {
	var err error
	if c.tmp, err = os.MkdirTemp("", "mkdata-change-*"); err != nil {
		return err
	}
	defer os.RemoveAll(c.tmp)
	steps := []func() error{c.rewriteInPlace, c.rotateLogs, c.editTexts}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	if err := c.im.script(c.requests); err != nil {
		return err
	}
	fmt.Printf("changed %d bytes of file data: %s\n", c.changed, strings.Join(c.summaries, ", "))
	return nil
}

// rewriteInPlace overwrites runs of file data where the file's blocks lie,
// as a database does, then stamps the files' times.
func (c *change) rewriteInPlace() error {
	cands := c.withSuffix(".dat")
	if len(cands) == 0 {
		cands = c.files
	}
	img, err := os.OpenFile(c.im.path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer img.Close()
	data := newRand(c.seed, "change data")
	touched := map[string]map[int64]bool{}
	layout := map[string][]int64{}
	var done, runs int64
	for tries := 0; done < c.budget[0] && tries < 100000; tries++ {
		f := pickBySize(c.r, cands)
		if f.size == 0 {
			continue
		}
		if layout[f.path] == nil {
			if layout[f.path], err = c.im.blocks(f.path); err != nil {
				return err
			}
		}
		phys := layout[f.path]
		if int64(len(phys)) != (f.size+c.bs-1)/c.bs {
			continue // sparse or odd: its logical blocks cannot be found this way
		}
		length := min(changeRun*(1+c.r.Int64N(16)), f.size, c.budget[0]-done+changeRun-1) &^ (changeRun - 1)
		length = max(length, min(changeRun, f.size))
		off := c.r.Int64N((f.size-length)/changeRun+1) * changeRun
		if touched[f.path] == nil {
			touched[f.path] = map[int64]bool{}
		}
		if touched[f.path][off/changeRun] {
			continue
		}
		for o := off; o < off+length; o += changeRun {
			touched[f.path][o/changeRun] = true
		}
		if err := c.overwrite(img, data, phys, off, min(length, f.size-off)); err != nil {
			return err
		}
		done += length
		runs++
	}
	for _, p := range slices.Sorted(maps.Keys(touched)) {
		c.requests = append(c.requests, c.im.stampRequests(p)...)
	}
	c.changed += done
	c.summaries = append(c.summaries, fmt.Sprintf("%d runs rewritten in place in %d files", runs, len(touched)))
	return img.Sync()
}

// overwrite writes n random bytes over a file's data from off on, one
// filesystem block at a time where the block lies in the image.
func (c *change) overwrite(img *os.File, r *rand.Rand, phys []int64, off, n int64) error {
	var buf bytes.Buffer
	for o := off; o < off+n; {
		lb := o / c.bs
		k := min(c.bs-o%c.bs, off+n-o)
		buf.Reset()
		if err := writeRandom(&buf, r, k); err != nil {
			return err
		}
		if _, err := img.WriteAt(buf.Bytes(), phys[lb]*c.bs+o%c.bs); err != nil {
			return err
		}
		o += k
	}
	return nil
}

// rotateLogs rotates randomly chosen logs until the budget is spent.
func (c *change) rotateLogs() error {
	logs := c.withSuffix(".log")
	c.r.Shuffle(len(logs), func(i, j int) { logs[i], logs[j] = logs[j], logs[i] })
	exists := map[string]bool{}
	for _, f := range c.files {
		exists[f.path] = true
	}
	var done int64
	n := 0
	for _, f := range logs {
		if done >= c.budget[1] {
			break
		}
		size := min(c.budget[1]-done, 1<<20+c.r.Int64N(3<<20))
		host := filepath.Join(c.tmp, fmt.Sprintf("log-%d", n))
		err := writeFile(host, func(b *bytes.Buffer) error {
			return writeLog(b, newRand(c.seed, f.path), size, c.im.now)
		})
		if err != nil {
			return err
		}
		old := f.path + ".1"
		if exists[old] {
			c.requests = append(c.requests, "rm "+old)
		}
		// ln and unlink leave the link count alone: together, a rename.
		c.requests = append(c.requests, "ln "+f.path+" "+old, "unlink "+f.path, "write "+host+" "+f.path)
		c.requests = append(c.requests, c.im.stampRequests(old)...)
		c.requests = append(c.requests, c.im.stampRequests(f.path)...)
		done += size
		n++
	}
	c.changed += done
	c.summaries = append(c.summaries, fmt.Sprintf("%d logs rotated", n))
	return nil
}

// editTexts saves edited versions of randomly chosen text files that fit
// in what is left of the budget.
func (c *change) editTexts() error {
	texts := c.withSuffix(".txt")
	c.r.Shuffle(len(texts), func(i, j int) { texts[i], texts[j] = texts[j], texts[i] })
	vocab := newVocabulary(c.seed)
	var done int64
	n := 0
	for _, f := range texts {
		left := c.budget[2] - done
		if left <= 0 {
			break
		}
		if f.size > left && f.size > 64<<10 {
			continue
		}
		old, err := c.im.read(f.path)
		if err != nil {
			return err
		}
		r := newRand(c.seed, "edit "+f.path)
		host := filepath.Join(c.tmp, fmt.Sprintf("text-%d", n))
		err = writeFile(host, func(b *bytes.Buffer) error {
			cut := r.IntN(len(old) + 1)
			drop := min(len(old)-cut, r.IntN(len(old)/20+1))
			b.Write(old[:cut])
			if err := writeText(b, vocab, r, 200+int64(r.IntN(len(old)/10+1))); err != nil {
				return err
			}
			b.Write(old[cut+drop:])
			return nil
		})
		if err != nil {
			return err
		}
		st, err := os.Stat(host)
		if err != nil {
			return err
		}
		c.requests = append(c.requests, "rm "+f.path, "write "+host+" "+f.path)
		c.requests = append(c.requests, c.im.stampRequests(f.path)...)
		done += st.Size()
		n++
	}
	c.changed += done
	c.summaries = append(c.summaries, fmt.Sprintf("%d text files edited", n))
	return nil
}

// pickBySize picks a file with a probability proportional to its size.
func pickBySize(r *rand.Rand, files []file) file {
	var total int64
	for _, f := range files {
		total += f.size
	}
	if total == 0 {
		return files[r.IntN(len(files))]
	}
	x := r.Int64N(total)
	for _, f := range files {
		if x < f.size {
			return f
		}
		x -= f.size
	}
	return files[len(files)-1]
}

func writeFile(path string, fill func(*bytes.Buffer) error) error {
	var b bytes.Buffer
	if err := fill(&b); err != nil {
		return err
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return err
	}
	at := time.Unix(epoch, 0)
	return os.Chtimes(path, at, at)
}
