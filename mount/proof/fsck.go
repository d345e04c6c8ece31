package proof

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/rewind-dev/rewind/mount"
)

// Verdicts of one check.
const (
	Pass       = "pass"
	Fail       = "fail"
	NotChecked = "not checked"
)

// tailLines is how many of a checker's or console's last lines a result
// keeps.
const tailLines = 20

// FSResult is the verdict on one filesystem of a recovery point.
type FSResult struct {
	Partition string   `json:"partition"` // "p1", "p5", ...; "disk" for a whole-disk filesystem
	Type      string   `json:"type,omitempty"`
	Result    string   `json:"result"`            // Pass, Fail or NotChecked
	Checker   string   `json:"checker,omitempty"` // the command run, e.g. "e2fsck -fn"
	Note      string   `json:"note,omitempty"`    // why not checked, or what the replay said
	Output    []string `json:"output,omitempty"`  // the checker's last lines, on failure
}

// FsckReport is Fsck's answer.
type FsckReport struct {
	Pass        bool       `json:"pass"` // at least one filesystem checked, none failed
	Filesystems []FSResult `json:"filesystems"`
}

// checkers are the read-only checks by filesystem type (mount's names).
var checkers = map[string]struct {
	args []string
	pkg  string
}{
	"ext4": {[]string{"e2fsck", "-fn"}, "e2fsprogs"},
	"xfs":  {[]string{"xfs_repair", "-n"}, "xfsprogs"},
}

// Fsck checks every filesystem of img as the system would have seen it
// after a crash at that instant (see the package documentation). It fails
// only when it cannot set up the overlay or ctx ends; a filesystem that
// does not check clean is a Fail in the report.
func Fsck(ctx context.Context, img mount.Image, opts mount.Options) (*FsckReport, error) {
	rep := &FsckReport{Filesystems: []FSResult{}}
	checkable := func(typ string) bool { _, ok := checkers[typ]; return ok }
	err := mount.Replay(ctx, img, opts, checkable, func(fs mount.Filesystem) {
		rep.Filesystems = append(rep.Filesystems, check(ctx, fs))
	})
	if err != nil {
		return nil, err
	}
	checked := 0
	for _, r := range rep.Filesystems {
		switch r.Result {
		case Fail:
			return rep, nil
		case Pass:
			checked++
		}
	}
	rep.Pass = checked > 0
	return rep, nil
}

func check(ctx context.Context, fs mount.Filesystem) FSResult {
	r := FSResult{Partition: fs.Part, Type: fs.Type, Result: NotChecked, Note: fs.Note}
	if r.Partition == "" {
		r.Partition = "disk"
	}
	c, ok := checkers[fs.Type]
	switch {
	case !ok && fs.Type != "":
		r.Note = "rewind checks only ext2/3/4 and xfs"
		return r
	case !ok:
		return r
	case fs.Device == "":
		return r // Note says why it was not attached
	}
	r.Checker = strings.Join(c.args, " ")
	bin, err := exec.LookPath(c.args[0])
	if err != nil {
		r.Note = fmt.Sprintf("%s not found where the daemon runs: install the Debian package %s", c.args[0], c.pkg)
		return r
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, append(c.args[1:], fs.Device)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		r.Result = Pass
	case ctx.Err() != nil:
		r.Note = "interrupted: " + ctx.Err().Error()
	case errors.As(err, &exit):
		r.Result = Fail
		r.Note = joinNote(r.Note, fmt.Sprintf("%s exited with status %d", c.args[0], exit.ExitCode()))
		r.Output = lastLines(out.String(), tailLines)
	default:
		r.Result = Fail
		r.Note = fmt.Sprintf("%s did not run: %v", c.args[0], err)
	}
	return r
}

// joinNote appends b to the note a.
func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// lastLines returns the last n non-empty lines of s.
func lastLines(s string, n int) []string {
	var lines []string
	for _, l := range strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }) {
		if l = strings.TrimRight(l, " \t"); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}
