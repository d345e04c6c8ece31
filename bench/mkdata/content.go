package main

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"
)

// writeRandom writes n incompressible bytes.
func writeRandom(w io.Writer, r *rand.Rand, n int64) error {
	buf := make([]byte, 1<<20)
	for n > 0 {
		chunk := min(n, int64(len(buf)))
		for i := int64(0); i < chunk; i += 8 {
			v := r.Uint64()
			for j := int64(0); j < 8 && i+j < chunk; j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		if _, err := w.Write(buf[:chunk]); err != nil {
			return err
		}
		n -= chunk
	}
	return nil
}

// vocabulary is a fixed list of pseudo-words drawn with Zipf frequencies,
// so text compresses about as well as prose (roughly 3:1).
type vocabulary struct {
	words []string
	zipf  *rand.Zipf
}

func newVocabulary(seed uint64) *vocabulary {
	r := newRand(seed, "vocabulary")
	const letters = "etaoinshrdlcumwfgypbvkjxqz"
	words := make([]string, 5000)
	for i := range words {
		var b strings.Builder
		n := 2 + r.IntN(9)
		for range n {
			// Favour common letters, as in real text.
			b.WriteByte(letters[int(float64(len(letters))*r.Float64()*r.Float64())])
		}
		words[i] = b.String()
	}
	return &vocabulary{words: words, zipf: rand.NewZipf(r, 1.1, 2, uint64(len(words)-1))}
}

// writeText writes about n bytes of sentences and paragraphs.
func writeText(w io.Writer, v *vocabulary, r *rand.Rand, n int64) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	var written int64
	for written < n {
		words := 6 + r.IntN(14)
		for i := range words {
			word := v.words[int(v.zipf.Uint64())%len(v.words)]
			if i == 0 {
				word = strings.ToUpper(word[:1]) + word[1:]
			}
			sep := " "
			if i == words-1 {
				sep = ".\n"
				if r.IntN(5) == 0 {
					sep = ".\n\n"
				}
			}
			k, _ := bw.WriteString(word + sep)
			written += int64(k)
		}
	}
	return bw.Flush()
}

var (
	logHosts  = []string{"web-01", "web-02", "db-01", "cache-01"}
	logPaths  = []string{"/api/v1/items", "/api/v1/users", "/login", "/static/app.js", "/healthz", "/api/v1/orders"}
	logLevels = []string{"INFO", "INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"}
)

// writeLog writes about n bytes of access and application log lines with
// increasing timestamps starting at start (Unix seconds).
func writeLog(w io.Writer, r *rand.Rand, n int64, start int64) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	var written int64
	ns := start * 1e9
	for written < n {
		ns += int64(r.IntN(50_000_000))
		sec, frac := ns/1e9, ns%1e9/1000
		ts := timestamp(sec, frac)
		host := logHosts[r.IntN(len(logHosts))]
		var line string
		if r.IntN(3) > 0 {
			// Few clients, few pages, few sizes: real access logs repeat
			// themselves and compress 5-10 times.
			page := r.IntN(len(logPaths))
			line = fmt.Sprintf("%s %s nginx[%d]: 10.0.%d.%d - - \"GET %s/%d HTTP/1.1\" %d %d 0.%03d\n",
				ts, host, 1000+r.IntN(2), r.IntN(2), 10+r.IntN(10), logPaths[page], r.IntN(50),
				[]int{200, 200, 200, 200, 304, 404}[r.IntN(6)], 512*(page+1), r.IntN(20))
		} else {
			line = fmt.Sprintf("%s %s app[%d]: %s request id=%08x user=u%d took=%dms\n",
				ts, host, 2000+r.IntN(2), logLevels[r.IntN(len(logLevels))], r.Uint32(), r.IntN(50), r.IntN(90))
		}
		k, err := bw.WriteString(line)
		if err != nil {
			return err
		}
		written += int64(k)
	}
	return bw.Flush()
}

// timestamp formats Unix seconds and microseconds as RFC 3339 UTC.
func timestamp(sec, micros int64) string {
	return time.Unix(sec, micros*1000).UTC().Format("2006-01-02T15:04:05.000000Z")
}
