package recovery

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/catalog"
)

// startFailing recovers db@latest into a target that takes no write (a
// file opened read-only), and waits until the copy has failed.
func (f *fixture) startFailing(name string) {
	f.t.Helper()
	path := filepath.Join(f.dir, name+".readonly")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		f.t.Fatal(err)
	}
	file, err := os.Open(path)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.m.Start(context.Background(), Request{Spec: "db@latest", Target: path, As: name, File: file}); err != nil {
		file.Close()
		f.t.Fatal(err)
	}
	f.waitState(name, StateFailed)
}

func (f *fixture) waitState(name, state string) Status {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, st := range f.m.List() {
			if st.Name == name && st.State == state {
				return st
			}
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%s never became %s: %+v", name, state, f.m.List())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// retryInto retries name into a new file.
func (f *fixture) retryInto(name, file string) (string, *Status, error) {
	f.t.Helper()
	return f.retryIntoOpts(name, file, RetryRequest{})
}

// retryIntoOpts retries name into a new file, with req's other fields.
func (f *fixture) retryIntoOpts(name, file string, req RetryRequest) (string, *Status, error) {
	f.t.Helper()
	path := filepath.Join(f.dir, file)
	fd, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Target, req.File, req.Created = path, fd, true
	st, err := f.m.Retry(context.Background(), name, req)
	if err != nil {
		fd.Close()
	}
	return path, st, err
}

// A copy that failed is started again into another target while the
// export keeps serving: writes made through the export before and after
// the retry, on the Disk its clients already hold, all reach the new
// target, and cutover makes it the disk.
func TestRecoverRetry(t *testing.T) {
	f := newFixture(t)
	f.startFailing("rec")
	if st := f.waitState("rec", StateFailed); st.ETA != -1 {
		t.Fatalf("a failed copy shows an ETA of %v s", st.ETA)
	}
	d := f.disk("rec")
	want := bytes.Clone(f.data)
	write := func(off int64, b byte) {
		t.Helper()
		p := bytes.Repeat([]byte{b}, 8192)
		if _, err := d.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
	}
	write(0, 0x11) // while failed: the clone takes it

	// Bad retries change nothing.
	if _, err := f.m.Retry(context.Background(), "nosuch", RetryRequest{Target: "nbd://127.0.0.1:1/x"}); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("retry of an unknown recovery: %v, want not found", err)
	}
	small := filepath.Join(f.dir, "small.target")
	if err := os.WriteFile(small, make([]byte, mib), 0o600); err != nil {
		t.Fatal(err)
	}
	sf, err := os.OpenFile(small, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Retry(context.Background(), "rec", RetryRequest{Target: small, File: sf}); !errors.Is(err, catalog.ErrInvalid) {
		t.Fatalf("retry into a target too small: %v, want invalid", err)
	}
	if st := f.waitState("rec", StateFailed); st.Target == small {
		t.Fatal("a refused retry changed the target")
	}

	path, st, err := f.retryInto("rec", "second.target")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != StateCopying || st.Target != path || st.Reason != "" {
		t.Fatalf("status after retry %+v", st)
	}
	if _, err := f.m.Retry(context.Background(), "rec", RetryRequest{Target: path}); !errors.Is(err, catalog.ErrConflict) {
		t.Fatalf("retry of a running copy: %v, want a conflict", err)
	}
	write(3*mib+4096, 0x22) // after the retry, on the Disk held since before
	j, _ := f.m.get("rec")
	if err := j.cp.WaitConverged(context.Background()); err != nil {
		t.Fatal(err)
	}
	write(size-8192, 0x33)
	f.cutover("rec")
	targetHolds(t, path, want, "after retry and cutover the target differs from what the export held")
	got := make([]byte, 8192)
	if _, err := d.ReadAt(got, 0); err != nil || got[0] != 0x11 {
		t.Fatalf("the Disk after cutover: %v, %x", err, got[:4])
	}

	// A cancelled copy can be retried too, here into its own target again.
	spath, _ := f.start("rec2", 0)
	if _, err := f.m.Cancel("rec2"); err != nil {
		t.Fatal(err)
	}
	fd, err := os.OpenFile(spath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Retry(context.Background(), "rec2", RetryRequest{Target: spath, File: fd}); err != nil {
		fd.Close()
		t.Fatal(err)
	}
	f.cutover("rec2")
	targetHolds(t, spath, f.data, "a retried cancelled copy differs from the clone")
}

// After a restart, a recovery whose copy had failed is served through a
// parked Disk that follows its writes: a retry then copies everything,
// the writes made since the restart included.
func TestRecoverRetryAfterRestart(t *testing.T) {
	f := newFixture(t)
	f.startFailing("rec")
	f.close()
	f.open()
	st := f.waitState("rec", StateFailed)
	if st.ETA != -1 || st.Done != 0 {
		t.Fatalf("a failed recovery after a restart: %+v", st)
	}
	d := f.disk("rec")
	want := bytes.Clone(f.data)
	p := bytes.Repeat([]byte{0x44}, 4096)
	if _, err := d.WriteAt(p, 5*mib); err != nil {
		t.Fatal(err)
	}
	copy(want[5*mib:], p)
	path, _, err := f.retryInto("rec", "after.target")
	if err != nil {
		t.Fatal(err)
	}
	q := bytes.Repeat([]byte{0x55}, 4096)
	if _, err := d.WriteAt(q, 7*mib); err != nil {
		t.Fatal(err)
	}
	copy(want[7*mib:], q)
	j, _ := f.m.get("rec")
	if err := j.cp.WaitConverged(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.cutover("rec")
	targetHolds(t, path, want, "a recovery retried after a restart differs from what its export held")
}

// A copy that failed part way, retried with Resume into its own target,
// copies only what its saved progress had left and what the clone wrote
// since; into another target, or without progress, Resume is refused.
func TestRecoverRetryResume(t *testing.T) {
	f := newFixture(t)
	path, _ := f.start("rec", 2*mib) // slow enough to stop part way
	j, _ := f.m.get("rec")
	for j.cp.Progress().Done < 3*mib {
		time.Sleep(10 * time.Millisecond)
	}
	if err := j.cp.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	// The daemon stops, and starts while the target is away: the copy
	// fails, its progress kept.
	f.close()
	if err := os.Rename(path, path+".away"); err != nil {
		t.Fatal(err)
	}
	f.open()
	if st := f.waitState("rec", StateFailed); st.Done < 3*mib {
		t.Errorf("after the restart the failed copy shows %d bytes done, want the %d saved at least", st.Done, 3*mib)
	} else if !st.Resumable {
		t.Error("a failed copy with saved progress is not shown as resumable")
	}
	if err := os.Rename(path+".away", path); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(f.data)
	p := bytes.Repeat([]byte{0x66}, 4096)
	if _, err := f.disk("rec").WriteAt(p, 0); err != nil { // where the copy had been
		t.Fatal(err)
	}
	copy(want, p)

	other, _, err := f.retryIntoOpts("rec", "other.target", RetryRequest{Resume: true})
	if !errors.Is(err, catalog.ErrConflict) {
		t.Fatalf("resume into another target: %v, want a conflict", err)
	}
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		os.Remove(other)
	}
	fd, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	none := int64(0)
	if _, err := f.m.Retry(context.Background(), "rec", RetryRequest{Target: path, File: fd, Resume: true, Limit: &none}); err != nil {
		fd.Close()
		t.Fatal(err)
	}
	j, _ = f.m.get("rec")
	if err := j.cp.WaitConverged(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := j.cp.Progress().Copied; c > size-2*mib {
		t.Errorf("the resumed copy copied %d bytes of %d: it started over", c, size)
	}
	f.cutover("rec")
	targetHolds(t, path, want, "a resumed copy differs from what the export held")

	if st := f.waitState("rec", StateCutOver); st.Resumable {
		t.Error("a cut-over recovery is shown as resumable")
	}

	// A cancelled copy keeps no progress.
	spath, _ := f.start("rec2", 1<<10)
	if st, err := f.m.Cancel("rec2"); err != nil {
		t.Fatal(err)
	} else if st.Resumable {
		t.Error("a cancelled copy is shown as resumable")
	}
	fd, err = os.OpenFile(spath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Retry(context.Background(), "rec2", RetryRequest{Target: spath, File: fd, Resume: true}); !errors.Is(err, catalog.ErrConflict) {
		t.Fatalf("resume of a cancelled copy: %v, want a conflict", err)
	}
}
