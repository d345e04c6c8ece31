package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rewind-dev/rewind/blockstore/objstore/weed"
)

// nobody is the unprivileged user the access tests run the CLI as.
const nobody = 65534

// rawSocketEnv, when set, makes this test binary a raw client of the
// socket it names instead of running tests: the access tests run it as
// another user to send what bin/rewind never sends.
const rawSocketEnv = "REWIND_TEST_RAW_SOCKET"

func TestMain(m *testing.M) {
	if sock := os.Getenv(rawSocketEnv); sock != "" {
		os.Exit(rawCall(sock, os.Getenv("REWIND_TEST_RAW_CALL"), os.Getenv("REWIND_TEST_RAW_BODY")))
	}
	weed.Main(m) // runs the tests, then stops the shared SeaweedFS if one started
}

// rawCall posts body to /v1/call on the socket and prints the status
// code and the answer.
func rawCall(sock, call, body string) int {
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	resp, err := hc.Post("http://rewind/v1/"+call, "application/json", strings.NewReader(body))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Printf("%d %s", resp.StatusCode, b)
	return 0
}

// rawAsNobody runs this test binary as 65534, as a raw client posting
// body to /v1/call on the daemon's socket; it returns the status code
// and the answer.
func (r *rewind) rawAsNobody(dir, call, body string) string {
	r.t.Helper()
	self, err := os.Executable()
	if err != nil {
		r.t.Fatal(err)
	}
	bin := filepath.Join(dir, "raw-client")
	if _, err := os.Stat(bin); err != nil {
		mustRunCmd(r.t, "cp", self, bin)
		os.Chmod(bin, 0o755)
	}
	setpriv := requireTool(r.t, "setpriv", "util-linux")
	res := runCmd(r.t, nil, []string{rawSocketEnv + "=" + r.Socket(), "REWIND_TEST_RAW_CALL=" + call, "REWIND_TEST_RAW_BODY=" + body},
		setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", bin)
	if res.Code != 0 {
		r.t.Fatalf("raw call %s as %d: %s", call, nobody, res)
	}
	return res.Stdout
}

// accessRewind returns a runner whose binary and data directory an
// unprivileged user can reach: t.TempDir() is 0700 root, so the test's
// directories are opened up and bin/rewind is copied into them.
func accessRewind(t *testing.T) (*rewind, string) {
	t.Helper()
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(base, "rewind")
	mustRunCmd(t, "cp", rewindBinary(t), bin)
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(base, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	return &rewind{t: t, Bin: bin, Data: data}, base
}

// runAsNobody runs `rewind --data DATA ARGS...` as uid and gid 65534 with
// no supplementary groups.
func (r *rewind) runAsNobody(args ...string) cmdResult {
	r.t.Helper()
	setpriv := requireTool(r.t, "setpriv", "util-linux")
	ids := []string{"--reuid=65534", "--regid=65534", "--clear-groups", r.Bin}
	return runCmd(r.t, nil, r.Env, setpriv, append(ids, r.args(args)...)...)
}

// oneLineError fails the test unless res failed with one line of error
// that contains want.
func oneLineError(t *testing.T, what string, res cmdResult, want string) {
	t.Helper()
	msg := strings.TrimSpace(res.Stderr)
	if res.Code == 0 || strings.Contains(msg, "\n") || !strings.Contains(msg, want) {
		t.Errorf("%s: want one line of error containing %q, got %s", what, want, res)
	}
}

// volumeNames lists the volumes, as root.
func volumeNames(t *testing.T, rw *rewind) []string {
	t.Helper()
	var vols []struct{ Name string }
	if err := json.Unmarshal([]byte(rw.MustRun("--json", "volume", "list")), &vols); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range vols {
		names = append(names, v.Name)
	}
	return names
}

func ownerOf(t *testing.T, path string) uint32 {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Uid
}

// TestAccessRefusesOthers: the socket is 0600, and a user who is neither
// root nor the data directory's owner is refused with one line, through
// the mode and through the peer credential check, and the CLI does not
// open the store itself instead.
func TestAccessRefusesOthers(t *testing.T) {
	rw, base := accessRewind(t)
	img := filepath.Join(base, "disk.img")
	if err := os.WriteFile(img, randomBytes(3, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// No daemon: opening the store in-process fails for want of rights.
	oneLineError(t, "volume list without a daemon", rw.runAsNobody("volume", "list"), "permission denied")

	rw.Serve(serveOptions{})
	st, err := os.Lstat(rw.Socket())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600", st.Mode())
	}
	// The mode refuses the connection: one line, naming the socket (not
	// the in-process failure to open the store).
	oneLineError(t, "volume list through a 0600 socket", rw.runAsNobody("volume", "list"),
		rw.Socket()+" serves root and the owner of "+rw.Data+" only")
	oneLineError(t, "import through a 0600 socket", rw.runAsNobody("import", "v", img), "serves root and the owner")
	// With the mode opened, the peer credential check refuses.
	if err := os.Chmod(rw.Socket(), 0o666); err != nil {
		t.Fatal(err)
	}
	oneLineError(t, "volume list through a 0666 socket", rw.runAsNobody("volume", "list"), "not uid 65534")
	oneLineError(t, "import through a 0666 socket", rw.runAsNobody("import", "v", img), "not uid 65534")
	mnt := filepath.Join(base, "mnt")
	os.Mkdir(mnt, 0o777)
	oneLineError(t, "mount through a 0666 socket", rw.runAsNobody("mount", "v", mnt), "not uid 65534")
	if names := volumeNames(t, rw); len(names) != 0 {
		t.Errorf("refused imports made volumes %v", names)
	}
	// Root is served as before.
	rw.MustRun("import", "v", img)
	out := filepath.Join(base, "out.img")
	rw.MustRun("export", "v@latest", out)
	if sha256File(t, out) != sha256File(t, img) {
		t.Error("root's export differs from the import")
	}
	// The CLI opens the destination before the daemon resolves the spec:
	// a bad spec must still leave no new file and an old one intact.
	fresh := filepath.Join(base, "fresh.img")
	oneLineError(t, "export of an unknown volume", rw.Run("export", "nosuch@latest", fresh), `no volume "nosuch"`)
	if _, err := os.Lstat(fresh); !os.IsNotExist(err) {
		t.Errorf("a failed export left %s (%v)", fresh, err)
	}
	oneLineError(t, "export of an unknown volume over a file", rw.Run("export", "nosuch@latest", out), `no volume "nosuch"`)
	if sha256File(t, out) != sha256File(t, img) {
		t.Error("a failed export changed the file it was to replace")
	}
}

// TestAccessServesDataOwner: with the data directory owned by 65534 and
// the daemon root, 65534 is served, but only with its own rights: it
// imports what it can read, not a root-only file; exports where it can
// write, not elsewhere; and mounts only onto its own directories.
func TestAccessServesDataOwner(t *testing.T) {
	rw, base := accessRewind(t)
	if err := os.Chown(rw.Data, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	rw.Serve(serveOptions{})
	if st, err := os.Lstat(rw.Socket()); err != nil || st.Mode().Perm() != 0o600 || ownerOf(t, rw.Socket()) != nobody {
		t.Fatalf("socket: %v, %v, want 0600 owned by %d", st.Mode(), err, nobody)
	}

	data := randomBytes(4, 2<<20)
	img := filepath.Join(base, "disk.img")
	secret := filepath.Join(base, "secret.img")
	for path, mode := range map[string]os.FileMode{img: 0o644, secret: 0o600} {
		if err := os.WriteFile(path, data, mode); err != nil {
			t.Fatal(err)
		}
	}
	if res := rw.runAsNobody("import", "v", img); res.Code != 0 {
		t.Fatalf("import of a readable file as the owner: %s", res)
	}
	oneLineError(t, "import of a root-only file", rw.runAsNobody("import", "s", secret), "permission denied")
	if names := volumeNames(t, rw); len(names) != 1 || names[0] != "v" {
		t.Errorf("volumes %v, want [v] alone", names)
	}

	// Exports: into a directory 65534 may write, as 65534.
	pub := filepath.Join(base, "pub")
	os.Mkdir(pub, 0o777)
	os.Chmod(pub, 0o777)
	out := filepath.Join(pub, "out.img")
	if res := rw.runAsNobody("export", "v@latest", out); res.Code != 0 {
		t.Fatalf("export as the owner: %s", res)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Error("the owner's export differs from the import")
	}
	if o := ownerOf(t, out); o != nobody {
		t.Errorf("the export is owned by uid %d, want %d (made with the caller's rights)", o, nobody)
	}
	// Not where it may not write: a root directory, an existing root file.
	rootDir := filepath.Join(base, "rootonly")
	os.Mkdir(rootDir, 0o755)
	rootFile := filepath.Join(base, "root.img")
	os.WriteFile(rootFile, []byte("root's"), 0o644)
	etc := filepath.Join("/etc", "rewind-access-test-"+filepath.Base(base))
	t.Cleanup(func() { os.Remove(etc) })
	for _, dest := range []string{filepath.Join(rootDir, "x"), etc} {
		oneLineError(t, "export to "+dest, rw.runAsNobody("export", "v@latest", dest), "permission denied")
		if _, err := os.Lstat(dest); !os.IsNotExist(err) {
			t.Errorf("a refused export made %s (%v)", dest, err)
		}
	}
	oneLineError(t, "export over a root file", rw.runAsNobody("export", "v@latest", rootFile), "permission denied")
	if got, _ := os.ReadFile(rootFile); string(got) != "root's" {
		t.Errorf("a refused export changed %s: %q", rootFile, got)
	}

	// A client other than bin/rewind, naming paths instead of passing
	// them open, gets nothing the daemon's rights would give it.
	body, _ := json.Marshal(map[string]string{"volume": "s", "source": secret})
	if got := rw.rawAsNobody(base, "imports", string(body)); !strings.HasPrefix(got, "400 ") || !strings.Contains(got, "opens no path") {
		t.Errorf("raw import of a root-only path: %s", got)
	}
	rootDest := filepath.Join(rootDir, "raw")
	body, _ = json.Marshal(map[string]string{"spec": "v@latest", "dest": rootDest})
	if got := rw.rawAsNobody(base, "exports", string(body)); !strings.HasPrefix(got, "400 ") || !strings.Contains(got, "opens no path") {
		t.Errorf("raw export to a root-only path: %s", got)
	}
	if _, err := os.Lstat(rootDest); !os.IsNotExist(err) {
		t.Errorf("a raw export made %s (%v)", rootDest, err)
	}
	if names := volumeNames(t, rw); len(names) != 1 || names[0] != "v" {
		t.Errorf("volumes %v after raw calls, want [v] alone", names)
	}

	// Mounts: not onto root's directory; onto its own.
	theirs := filepath.Join(base, "theirs")
	os.Mkdir(theirs, 0o777)
	os.Chmod(theirs, 0o777) // writable, but not 65534's
	oneLineError(t, "mount onto root's directory", rw.runAsNobody("mount", "v", theirs), "mount onto a directory you own")
	if ok, _ := isMountpoint(theirs); ok {
		_ = rw.Run("umount", theirs)
		t.Fatalf("%s was mounted for uid %d", theirs, nobody)
	}
	mine := filepath.Join(base, "mine")
	os.Mkdir(mine, 0o755)
	os.Chown(mine, nobody, nobody)
	if res := rw.runAsNobody("mount", "v", mine); res.Code != 0 {
		t.Fatalf("mount onto the owner's own directory: %s", res)
	}
	if ok, err := isMountpoint(mine); !ok {
		t.Errorf("%s is not mounted (%v)", mine, err)
	}
	if res := rw.runAsNobody("umount", mine); res.Code != 0 {
		t.Errorf("umount: %s", res)
	}
}
