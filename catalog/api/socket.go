package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rewind-dev/rewind/catalog"
)

// ErrForbidden is the class of a call refused for who made it.
var ErrForbidden = errors.New("api: forbidden")

// refusal is an error of class ErrForbidden whose message is for the user.
type refusal struct{ msg string }

// Forbiddenf makes an error of class ErrForbidden with a message for the
// user, for daemon-only calls that refuse a caller.
func Forbiddenf(format string, args ...any) error {
	return &refusal{fmt.Sprintf(format, args...)}
}

func (e *refusal) Error() string { return e.msg }
func (e *refusal) Unwrap() error { return ErrForbidden }

// maxPassedFiles is the most descriptors a connection may pass; more are
// closed by the kernel (MSG_CTRUNC).
const maxPassedFiles = 4

// Socket is the daemon's local socket, DATA/rewind.sock. It serves root
// and the owner of the directory that holds it, no one else.
type Socket struct {
	path  string
	owner uint32 // uid of the directory holding the socket
	l     *net.UnixListener
	srv   *http.Server
	// peer reads the uid of a connection's process (SO_PEERCRED); tests
	// replace it.
	peer func(*net.UnixConn) (uint32, error)
}

// ListenSocket listens on path, to serve h, with no moment at which the
// socket file has a mode other than 0600: it is bound in a fresh 0700
// directory next to path, given its mode and owner (the owner of path's
// directory, when this process may chown), and renamed onto path,
// replacing a stale socket. It fails with catalog.ErrBusy when a daemon
// accepts on path.
func ListenSocket(path string, h http.Handler) (*Socket, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%w: a daemon already serves %s", catalog.ErrBusy, path)
	}
	l, owner, err := bindInPlace(path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	s := &Socket{path: path, owner: owner, l: l, peer: peerUID}
	s.srv = &http.Server{
		Handler:           s.guard(h),
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if sc, ok := c.(*sockConn); ok {
				return context.WithValue(ctx, connKey{}, sc)
			}
			return ctx
		},
	}
	return s, nil
}

// bindInPlace binds a socket, sets its mode and owner, and renames it onto
// path; it returns the uid of path's directory. The directory may belong
// to a user who could swap its entries while this runs (the data
// directory's owner), so every step after mkdir goes through descriptors:
// the private directory is opened without following links and checked to
// be this process's own, bound through /proc/self/fd, and the socket is
// chmod'ed, chown'ed and renamed relative to it.
func bindInPlace(path string) (*net.UnixListener, uint32, error) {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return nil, 0, err
	}
	defer d.Close()
	st, err := d.Stat()
	if err != nil {
		return nil, 0, err
	}
	dir := st.Sys().(*syscall.Stat_t)
	dfd := int(d.Fd())
	// Leftovers of a daemon killed while it listened (RemoveAll follows
	// no link).
	if names, err := d.Readdirnames(-1); err == nil {
		for _, n := range names {
			if strings.HasPrefix(n, ".sock-") {
				os.RemoveAll(filepath.Join(d.Name(), n))
			}
		}
	}
	tmp, err := os.MkdirTemp(d.Name(), ".sock-") // 0700, a name no one can guess
	if err != nil {
		return nil, 0, err
	}
	name := filepath.Base(tmp)
	defer unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR)
	tfd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, err
	}
	defer unix.Close(tfd)
	var tst unix.Stat_t
	if err := unix.Fstat(tfd, &tst); err != nil {
		return nil, 0, err
	}
	if tst.Uid != uint32(os.Geteuid()) || tst.Mode&0o077 != 0 {
		return nil, 0, fmt.Errorf("%s/%s was replaced while the socket was made", d.Name(), name)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: fmt.Sprintf("/proc/self/fd/%d/s", tfd), Net: "unix"})
	if err != nil {
		return nil, 0, err
	}
	l.SetUnlinkOnClose(false) // the socket file is path now; Shutdown removes it
	err = unix.Fchmodat(tfd, "s", 0o600, 0)
	if err == nil && os.Geteuid() == 0 {
		err = unix.Fchownat(tfd, "s", int(dir.Uid), int(dir.Gid), unix.AT_SYMLINK_NOFOLLOW)
	}
	if err == nil {
		err = unix.Renameat(tfd, "s", dfd, filepath.Base(path))
	}
	if err != nil {
		unix.Unlinkat(tfd, "s", 0)
		l.Close()
		return nil, 0, err
	}
	return l, dir.Uid, nil
}

// Owner is the uid that the socket serves besides root.
func (s *Socket) Owner() uint32 { return s.owner }

// Serve serves the handler to root and the owner; others get 403. It
// returns when the socket is shut down (http.ErrServerClosed).
func (s *Socket) Serve() error {
	return s.srv.Serve(&sockListener{UnixListener: s.l, peer: s.peer})
}

// Shutdown stops serving after the calls in flight and removes the socket.
func (s *Socket) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	s.l.Close() // in case Serve never ran
	os.Remove(s.path)
	return err
}

// checkPeer says whether uid may use a socket whose directory is owned by
// owner: root and the owner may.
func checkPeer(uid, owner uint32) bool { return uid == 0 || uid == owner }

// guard refuses callers other than root and the owner with 403.
func (s *Socket) guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		uid, ok := PeerUID(r.Context())
		if !ok || !checkPeer(uid, s.owner) {
			who := "an unknown user"
			if ok {
				who = fmt.Sprintf("uid %d", uid)
			}
			writeError(w, http.StatusForbidden, &refusal{fmt.Sprintf("%s serves root and the owner of %s (uid %d) only, not %s",
				s.path, filepath.Dir(s.path), s.owner, who)})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// connKey keys the *sockConn of a request's connection in its context.
type connKey struct{}

func connOf(ctx context.Context) *sockConn {
	sc, _ := ctx.Value(connKey{}).(*sockConn)
	return sc
}

// PeerUID returns the uid of the process that made the call, when it came
// through the local socket (SO_PEERCRED). Calls from elsewhere have none.
func PeerUID(ctx context.Context) (uint32, bool) {
	sc := connOf(ctx)
	if sc == nil || !sc.hasUID {
		return 0, false
	}
	return sc.uid, true
}

// PassedFile takes the descriptor the caller passed on the request's
// connection (Client.CallWithFile), or returns nil; the handler owns it
// from then on. The daemon's own routes (recoveries, protections, verify/nbd) use it.
func PassedFile(ctx context.Context) *os.File { return passedFile(ctx) }

// passedFile takes the descriptor the caller passed on the request's
// connection, or returns nil. The caller closes it.
func passedFile(ctx context.Context) *os.File {
	sc := connOf(ctx)
	if sc == nil {
		return nil
	}
	return sc.takeFile()
}

// peerUID reads the uid of the process at the other end of c.
func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return cred.Uid, nil
}

// sockListener hands out sockConns, each knowing its peer's uid.
type sockListener struct {
	*net.UnixListener
	peer func(*net.UnixConn) (uint32, error)
}

func (l *sockListener) Accept() (net.Conn, error) {
	c, err := l.AcceptUnix()
	if err != nil {
		return nil, err
	}
	sc := &sockConn{UnixConn: c}
	if uid, err := l.peer(c); err == nil {
		sc.uid, sc.hasUID = uid, true
	}
	return sc, nil
}

// sockConn is one connection of the socket. Its first read takes the
// descriptors a client passed (SCM_RIGHTS) with a leading marker byte,
// and strips the marker; descriptors not taken by a handler are closed
// with the connection.
type sockConn struct {
	*net.UnixConn
	uid    uint32
	hasUID bool
	mu     struct {
		sync.Mutex
		first bool // the first read is done
		files []*os.File
	}
}

// marker is the byte a client sends, with descriptors attached, before
// its request. No HTTP request starts with it.
const marker = 0

func (c *sockConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	first := !c.mu.first
	c.mu.first = true
	c.mu.Unlock()
	if !first || len(b) == 0 {
		return c.UnixConn.Read(b)
	}
	// Go's ReadMsgUnix receives with MSG_CMSG_CLOEXEC on Linux.
	oob := make([]byte, unix.CmsgSpace(4*maxPassedFiles))
	n, oobn, _, _, err := c.ReadMsgUnix(b, oob)
	if oobn > 0 {
		c.keep(oob[:oobn])
	}
	if n > 0 && b[0] == marker {
		copy(b, b[1:n])
		n--
		if n == 0 && err == nil {
			return c.UnixConn.Read(b)
		}
	}
	return n, err
}

// keep takes the descriptors out of control messages.
func (c *sockConn) keep(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			c.mu.files = append(c.mu.files, os.NewFile(uintptr(fd), "passed file"))
		}
	}
}

func (c *sockConn) takeFile() *os.File {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.mu.files) == 0 {
		return nil
	}
	f := c.mu.files[0]
	c.mu.files = c.mu.files[1:]
	return f
}

func (c *sockConn) Close() error {
	c.mu.Lock()
	files := c.mu.files
	c.mu.files = nil
	c.mu.Unlock()
	for _, f := range files {
		f.Close()
	}
	return c.UnixConn.Close()
}
