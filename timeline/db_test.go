package timeline

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Write-ahead logs whose memtables were flushed are deleted, not kept for
// reuse: a closed store holds no log but its last one.
func TestFlushedLogsAreDeleted(t *testing.T) {
	fs := vfs.NewMem()
	db, err := pebble.Open("index", PebbleOptions(fs, nil))
	if err != nil {
		t.Fatal(err)
	}
	val := strings.Repeat("x", 1024)
	for round := range 4 {
		for i := range 2000 {
			if err := db.Set([]byte(fmt.Sprintf("g%d-%d", round, i)), []byte(val), pebble.NoSync); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	names, err := fs.List("index")
	if err != nil {
		t.Fatal(err)
	}
	var logs []string
	for _, n := range names {
		if strings.HasSuffix(n, ".log") {
			st, _ := fs.Stat("index/" + n)
			logs = append(logs, fmt.Sprintf("%s (%d bytes)", n, st.Size()))
		}
	}
	if len(logs) != 1 {
		t.Fatalf("write-ahead logs left: %v", logs)
	}
}
