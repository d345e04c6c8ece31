package mount

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

const helperEnv = "REWIND_MOUNT_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper())
	}
	if os.Getenv(flusherEnv) != "" {
		os.Exit(runFlusherHelper())
	}
	os.Exit(m.Run())
}

// runHelper is the child of TestCleanupStaleAfterKill: it mounts a file
// view and a tree, prints "ready", and waits to be killed with -9.
func runHelper() int {
	state := os.Getenv("HELPER_STATE")
	img, err := openFileImage(os.Getenv("HELPER_IMAGE"))
	if err == nil {
		_, err = MountFiles(os.Getenv("HELPER_FILES"), img, Options{StateDir: state})
	}
	if err == nil {
		src := newFakeSource(t0)
		src.addVersion("v", t0, randomBytes(1, 1<<20))
		_, err = MountTree(os.Getenv("HELPER_TREE"), src, Options{StateDir: state})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	select {}
}

func TestCleanupStaleAfterKill(t *testing.T) {
	requireTools(t, filesTools)
	disk := makeGPTDisk(t)
	files, tree, state := emptyDir(t, "files"), emptyDir(t, "tree"), t.TempDir()
	t.Cleanup(func() { _ = CleanupStale(state, nil) }) // whatever happens

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "HELPER_STATE="+state,
		"HELPER_IMAGE="+disk, "HELPER_FILES="+files, "HELPER_TREE="+tree)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper did not mount: %q %s", line, stderr.String())
	}
	for _, p := range []string{files, filepath.Join(files, "p1"), filepath.Join(files, "p2"), tree} {
		if ok, _ := mountedFrom(p, ""); !ok {
			t.Errorf("helper: %s is not mounted", p)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	// What a killed daemon leaves: a dead FUSE tree, mounted partitions
	// on loop devices whose backing file's server is gone.
	if _, err := os.Stat(filepath.Join(tree, "v")); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("stat in the dead tree: %v, want ENOTCONN", err)
	}
	if len(loopsUnder(t, state)) != 2 {
		t.Errorf("want 2 stale loop devices, have %q", loopsUnder(t, state))
	}

	var logs bytes.Buffer
	if err := CleanupStale(state, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatalf("CleanupStale: %v\n%s", err, logs.String())
	}
	t.Logf("CleanupStale:\n%s", logs.String())
	assertNoLeftovers(t, files, tree, state)
	if left := names(t, state); !slices.Equal(left, []string{stateFileName, stateLockName}) {
		t.Errorf("state directory holds %q", left)
	}
	doc, err := (&stateFile{dir: state}).readLocked()
	if err != nil || len(doc.Records) != 0 {
		t.Errorf("state file after CleanupStale: %v %+v", err, doc)
	}
	if !strings.Contains(logs.String(), "cleaned up stale resource") {
		t.Errorf("CleanupStale logged nothing")
	}
	// The directories work again.
	m, err := MountTree(tree, newFakeSource(t0), Options{StateDir: state})
	if err != nil {
		t.Fatalf("mount after cleanup: %v", err)
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
}

// CleanupStale leaves a live process's mounts alone.
func TestCleanupStaleSparesLiveMounts(t *testing.T) {
	requireTools(t, fuseTools)
	dir, state := emptyDir(t, "live"), t.TempDir()
	m, err := MountImage(dir, &fakeImage{data: make([]byte, 4096)}, false, Options{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, m)
	if err := CleanupStale(state, nil); err != nil {
		t.Fatal(err)
	}
	if ok, _ := mountedFrom(dir, m.fsName()); !ok {
		t.Fatal("CleanupStale unmounted a live mount")
	}
}
