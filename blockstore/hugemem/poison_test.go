package hugemem

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// useEnv, when set, makes TestUseAfterPut the helper process: it gives a
// buffer back and then reads or writes it.
const useEnv = "HUGEMEM_TEST_USE_AFTER_PUT"

// A use of a buffer after Put, read or write, kills the process in the
// poisoned build (make test's), instead of reading or changing the bytes
// of the buffer's next holder. In the ordinary build it goes unnoticed:
// that is why the tests run poisoned.
func TestUseAfterPut(t *testing.T) {
	if use := os.Getenv(useEnv); use != "" {
		p := NewPool(64<<10, 1<<20)
		bp := p.Get()
		b := *bp
		b[100] = 7
		p.Put(bp)
		if use == "write" {
			b[100] = 8
		}
		fmt.Printf("used %d\n", b[100])
		return
	}
	for _, use := range []string{"read", "write"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestUseAfterPut$", "-test.v")
		cmd.Env = append(os.Environ(), useEnv+"="+use)
		out, err := cmd.CombinedOutput()
		faulted := strings.Contains(string(out), "unexpected fault address") || strings.Contains(string(out), "SIGSEGV")
		switch {
		case Poisoned && (err == nil || !faulted):
			t.Errorf("a %s after Put did not fault in the poisoned build (%v):\n%s", use, err, out)
		case !Poisoned && (err != nil || !strings.Contains(string(out), "used ")):
			t.Errorf("a %s after Put failed in the ordinary build (%v):\n%s", use, err, out)
		}
	}
}

// A buffer given back is handed out again, whole and usable, poisoned or
// not; the poisoned build hands out the one given back first.
func TestReuseAfterPut(t *testing.T) {
	p := NewPool(64<<10, 1<<20)
	a, b := p.Get(), p.Get()
	p.Put(a)
	p.Put(b)
	want := b
	if Poisoned {
		want = a
	}
	got := p.Get()
	if got != want {
		t.Fatal("Get did not reuse the buffer it should")
	}
	for i := range *got {
		(*got)[i] = byte(i)
	}
	if (*got)[len(*got)-1] != byte(len(*got)-1) {
		t.Fatal("a reused buffer did not keep what was written")
	}
}
