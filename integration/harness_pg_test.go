package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// Databases on disks for the tests: Debian's PostgreSQL run as the
// postgres user, on an ext4 mounted through a loop device from an NBD
// export (nbdfuse) or a file.

// postgres runs Debian's PostgreSQL as the postgres user on a data
// directory, listening on a Unix socket only.
type postgres struct {
	t       *testing.T
	bin     string // /usr/lib/postgresql/N/bin
	data    string
	sock    string // socket directory, postgres's own
	port    int
	running bool
	pid     string // the postmaster's, while it runs
}

// newPostgres finds PostgreSQL's programs; base must be traversable by
// the postgres user.
func newPostgres(t *testing.T, base, data string) *postgres {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(bins) == 0 {
		t.Fatalf("PostgreSQL is not installed: install the Debian package postgresql (make deps installs it)")
	}
	sort.Strings(bins)
	sock := filepath.Join(base, "pgsock")
	if err := os.MkdirAll(sock, 0o700); err != nil {
		t.Fatal(err)
	}
	mustRunCmd(t, "chown", "postgres:postgres", sock)
	p := &postgres{t: t, bin: filepath.Dir(bins[len(bins)-1]), data: data, sock: sock, port: freePort(t)}
	t.Cleanup(func() {
		if p.running {
			p.as("pg_ctl", "-D", p.data, "-m", "immediate", "stop")
		}
	})
	return p
}

// as runs one of PostgreSQL's programs as the postgres user.
func (p *postgres) as(prog string, args ...string) cmdResult {
	p.t.Helper()
	setpriv := requireTool(p.t, "setpriv", "util-linux")
	ids := []string{"--reuid=postgres", "--regid=postgres", "--init-groups", filepath.Join(p.bin, prog)}
	return runCmd(p.t, nil, []string{"HOME=" + p.sock}, setpriv, append(ids, args...)...)
}

func (p *postgres) must(prog string, args ...string) string {
	p.t.Helper()
	res := p.as(prog, args...)
	if res.Code != 0 {
		p.t.Fatalf("%s %s: %s\nserver log:\n%s", prog, strings.Join(args, " "), res, p.log())
	}
	return res.Stdout
}

func (p *postgres) log() string {
	b, _ := os.ReadFile(filepath.Join(p.sock, "pg.log"))
	return tail(string(b), 3000)
}

func (p *postgres) initdb() {
	p.t.Helper()
	p.must("initdb", "-A", "trust", "-U", "postgres", "-D", p.data)
}

func (p *postgres) start() {
	p.t.Helper()
	p.must("pg_ctl", "-D", p.data, "-l", filepath.Join(p.sock, "pg.log"), "-w",
		"-o", fmt.Sprintf("-k %s -p %d -c listen_addresses=", p.sock, p.port), "start")
	p.running = true
	lock, err := os.ReadFile(filepath.Join(p.data, "postmaster.pid"))
	if err != nil {
		p.t.Fatal(err)
	}
	p.pid, _, _ = strings.Cut(string(lock), "\n")
}

// stop stops PostgreSQL and waits until its postmaster is gone: a copy
// of the data directory taken while it ran names it in postmaster.pid,
// and a PostgreSQL started there refuses to while that process exists.
func (p *postgres) stop() {
	p.t.Helper()
	p.must("pg_ctl", "-D", p.data, "-m", "fast", "-w", "stop")
	p.running = false
	waitUntil(p.t, stopTimeout, "the end of postmaster "+p.pid, func() error {
		if _, err := os.Stat("/proc/" + p.pid); err == nil {
			return fmt.Errorf("/proc/%s is still there", p.pid)
		}
		return nil
	})
}

// sql runs one statement and returns its rows, unaligned.
func (p *postgres) sql(q string) string {
	p.t.Helper()
	return strings.TrimSpace(p.must("psql", "-X", "-h", p.sock, "-p", fmt.Sprint(p.port), "-U", "postgres", "-d", "postgres",
		"-At", "-v", "ON_ERROR_STOP=1", "-c", q))
}

// attachment is a disk mounted through a loop device: an NBD export
// attached with nbdfuse, or a file.
type attachment struct {
	t        *testing.T
	mnt      string
	loop     string
	fuseDir  string
	fuse     *daemon
	detached bool
}

// attachExport mounts the ext4 of a writable NBD export on mnt.
func attachExport(t *testing.T, uri, mnt string) *attachment {
	t.Helper()
	nbdfuse := requireTool(t, "nbdfuse", "libnbd-bin")
	requireTool(t, "fusermount3", "fuse3")
	fuseDir := filepath.Join(t.TempDir(), "fuse")
	if err := os.Mkdir(fuseDir, 0o755); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, daemonSpec{Path: nbdfuse, Args: []string{fuseDir, uri}, ReadyMount: []string{fuseDir}})
	a := attachFile(t, filepath.Join(fuseDir, "nbd"), mnt)
	a.fuseDir, a.fuse = fuseDir, d
	return a
}

// attachFile mounts the ext4 of a file on mnt through a loop device.
func attachFile(t *testing.T, file, mnt string) *attachment {
	t.Helper()
	losetup := requireTool(t, "losetup", "mount")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	a := &attachment{t: t, mnt: mnt}
	t.Cleanup(func() {
		if !a.detached {
			run := func(name string, args ...string) { runCmd(t, nil, nil, name, args...) }
			run("umount", "-l", a.mnt)
			if a.loop != "" {
				run(losetup, "-d", a.loop)
			}
			if a.fuseDir != "" {
				run("fusermount3", "-u", "-z", a.fuseDir)
			}
		}
	})
	a.loop = strings.TrimSpace(mustRunCmd(t, losetup, "-f", "--show", file))
	mustRunCmd(t, "mount", "-t", "ext4", a.loop, mnt)
	return a
}

// detach unmounts, frees the loop device and detaches nbdfuse.
func (a *attachment) detach() {
	a.t.Helper()
	mustRunCmd(a.t, "umount", a.mnt)
	mustRunCmd(a.t, requireTool(a.t, "losetup", "mount"), "-d", a.loop)
	if a.fuse != nil {
		mustRunCmd(a.t, "fusermount3", "-u", a.fuseDir)
		<-a.fuse.exited
	}
	a.detached = true
}
