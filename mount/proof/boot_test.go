package proof

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// fakeQemu puts a qemu-system-x86_64 on PATH that records its arguments
// and TMPDIR in dir/args and then runs script.
func fakeQemu(t *testing.T, script string) (dir string) {
	t.Helper()
	dir = t.TempDir()
	body := "#!/bin/sh\necho \"$@\" > " + dir + "/args\necho \"$TMPDIR\" > " + dir + "/tmpdir\n" + script + "\n"
	if err := os.WriteFile(filepath.Join(dir, "qemu-system-x86_64"), []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":/usr/bin:/bin")
	return dir
}

func bootOpts(t *testing.T, expect string, timeout time.Duration) BootOptions {
	return BootOptions{Drive: "nbd+unix:///x?socket=/nowhere", Expect: regexp.MustCompile(expect),
		Timeout: timeout, TempDir: t.TempDir(), Kernel: "/k", Append: "console=ttyS0"}
}

// A matching line passes, though the VM would run on; the VM is killed, its private directory removed, and it had no network and a
// snapshot overlay.
func TestBootPasses(t *testing.T) {
	dir := fakeQemu(t, "echo 'booting'; printf 'login: \\r\\n'; exec sleep 600")
	o := bootOpts(t, `^login:`, time.Minute)
	res, err := Boot(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Pass || res.Matched != "login:" || strings.Join(res.Console, "|") != "booting|login:" {
		t.Fatalf("got %+v", res)
	}
	args, _ := os.ReadFile(filepath.Join(dir, "args"))
	for _, want := range []string{"-nic none", "snapshot=on", "-serial stdio", "-kernel /k", "-append console=ttyS0"} {
		if !strings.Contains(string(args), want) {
			t.Errorf("qemu %s: missing %q", args, want)
		}
	}
	if strings.Contains(string(args), "-initrd") {
		t.Errorf("qemu %s: -initrd without one", args)
	}
	tmp, _ := os.ReadFile(filepath.Join(dir, "tmpdir"))
	if d := strings.TrimSpace(string(tmp)); !strings.HasPrefix(d, o.TempDir) {
		t.Errorf("qemu's TMPDIR %q is not under %s", d, o.TempDir)
	} else if _, err := os.Stat(d); !os.IsNotExist(err) {
		t.Errorf("the VM's directory %s is still there (%v)", d, err)
	}
}

// No match before the timeout fails, with the last console lines.
func TestBootTimesOut(t *testing.T) {
	fakeQemu(t, "i=0; while [ $i -lt 30 ]; do echo line $i; i=$((i+1)); done; exec sleep 600")
	res, err := Boot(context.Background(), bootOpts(t, `login:`, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if res.Pass || !strings.Contains(res.Reason, "within 1s") || len(res.Console) != tailLines || res.Console[tailLines-1] != "line 29" {
		t.Fatalf("got %+v", res)
	}
}

// A VM that stops before the line fails at once, with qemu's complaint.
func TestBootStopsEarly(t *testing.T) {
	fakeQemu(t, "echo 'qemu: could not open disk' >&2; exit 1")
	res, err := Boot(context.Background(), bootOpts(t, `login:`, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if res.Pass || !strings.Contains(res.Reason, "could not open disk") {
		t.Fatalf("got %+v", res)
	}
}

func TestBootNoQemu(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := Boot(context.Background(), bootOpts(t, "x", time.Second)); !errors.Is(err, ErrNoQemu) {
		t.Fatalf("got %v, want ErrNoQemu", err)
	}
}

// A VM that KVM cannot start (qemu aborts before the console says
// anything) is started again under TCG, and the result says why.
func TestBootFallsBackToTCG(t *testing.T) {
	kvm := filepath.Join(t.TempDir(), "kvm") // a /dev/kvm that opens
	if err := os.WriteFile(kvm, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	defer func(d string) { kvmDevice = d }(kvmDevice)
	kvmDevice = kvm
	dir := fakeQemu(t, `case "$*" in
*"-accel kvm"*) echo "kvm_buf_set_msrs: Assertion failed" >&2; kill -ABRT $$ ;;
esac
echo "-accel tcg ran" >> `+"\"$(dirname \"$0\")/runs\""+`; echo 'login:'; exec sleep 600`)
	res, err := Boot(context.Background(), bootOpts(t, `^login:`, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Pass || res.Accel != "tcg" || !strings.Contains(res.KVMFailed, "kvm_buf_set_msrs") {
		t.Fatalf("got %+v", res)
	}
	runs, _ := os.ReadFile(filepath.Join(dir, "runs"))
	if string(runs) != "-accel tcg ran\n" {
		t.Fatalf("runs under TCG: %q", runs)
	}
}

// withKVM makes /dev/kvm open (a file of the test's) and KVM's quiet
// spell short for the test.
func withKVM(t *testing.T, quiet time.Duration) {
	kvm := filepath.Join(t.TempDir(), "kvm")
	if err := os.WriteFile(kvm, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	oldDev, oldQuiet := kvmDevice, kvmQuiet
	kvmDevice, kvmQuiet = kvm, quiet
	t.Cleanup(func() { kvmDevice, kvmQuiet = oldDev, oldQuiet })
}

// A VM that says nothing under KVM (a host whose nested KVM spins the
// guest silently) is booted under TCG beside it; TCG's pass wins, the
// result says why, and the KVM run is killed.
func TestBootQuietKVMFallsBackToTCG(t *testing.T) {
	withKVM(t, 200*time.Millisecond)
	dir := fakeQemu(t, `case "$*" in
*"-accel kvm"*) echo kvm >> "$(dirname "$0")/runs"; exec sleep 600 ;;
esac
echo tcg >> "$(dirname "$0")/runs"; echo 'login:'; exec sleep 600`)
	res, err := Boot(context.Background(), bootOpts(t, `^login:`, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Pass || res.Accel != "tcg" || !strings.Contains(res.KVMFailed, "no console line under KVM") {
		t.Fatalf("got %+v", res)
	}
	if runs, _ := os.ReadFile(filepath.Join(dir, "runs")); string(runs) != "kvm\ntcg\n" {
		t.Fatalf("runs: %q", runs)
	}
}

// A VM that speaks under KVM keeps its KVM run however slow it is to
// pass, and one that passes under KVM after TCG started beside it wins.
func TestBootSlowKVMKeepsKVM(t *testing.T) {
	withKVM(t, 200*time.Millisecond)
	dir := fakeQemu(t, `case "$*" in
*"-accel kvm"*) echo kvm >> "$(dirname "$0")/runs"; echo booting; sleep 1; echo 'login:'; exec sleep 600 ;;
esac
echo tcg >> "$(dirname "$0")/runs"; exec sleep 600`)
	res, err := Boot(context.Background(), bootOpts(t, `^login:`, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Pass || res.Accel != "kvm" || res.KVMFailed != "" {
		t.Fatalf("spoke at once: got %+v", res)
	}
	if runs, _ := os.ReadFile(filepath.Join(dir, "runs")); string(runs) != "kvm\n" {
		t.Fatalf("spoke at once: runs %q", runs)
	}

	fakeQemu(t, `case "$*" in
*"-accel kvm"*) sleep 1; echo 'login:'; exec sleep 600 ;;
esac
exec sleep 600`)
	res, err = Boot(context.Background(), bootOpts(t, `^login:`, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Pass || res.Accel != "kvm" || res.KVMFailed != "" {
		t.Fatalf("quiet, then passed under KVM: got %+v", res)
	}
}

// Neither passing: the timeout holds for both, and the result is TCG's,
// with why KVM's was not taken.
func TestBootQuietKVMBothFail(t *testing.T) {
	withKVM(t, 100*time.Millisecond)
	fakeQemu(t, `case "$*" in
*"-accel kvm"*) exec sleep 600 ;;
esac
echo 'Kernel panic'; exec sleep 600`)
	began := time.Now()
	res, err := Boot(context.Background(), bootOpts(t, `^login:`, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Fatalf("took %v with a 1 s timeout", d)
	}
	if res.Pass || res.Accel != "tcg" || strings.Join(res.Console, "|") != "Kernel panic" || res.KVMFailed == "" {
		t.Fatalf("got %+v", res)
	}
}
