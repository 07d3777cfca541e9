package tunnel

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// listenControl opens the control socket at path: a file, or an abstract
// unix socket when path starts with "@" (one per network namespace, gone
// with the process). An abstract socket has no file permissions, so only
// connections from this process's user or root are served on either.
func listenControl(path string) (net.Listener, error) {
	if !strings.HasPrefix(path, "@") {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, err
		}
		// A socket file left by a previous run would make Listen fail.
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		if strings.HasPrefix(path, "@") && errors.Is(err, unix.EADDRINUSE) {
			return nil, fmt.Errorf("%w: another process in this network namespace serves it", err)
		}
		return nil, err
	}
	return ownerOnly{ln.(*net.UnixListener)}, nil
}

// ownerOnly accepts connections from our own user and root, and closes
// the others.
type ownerOnly struct{ *net.UnixListener }

func (l ownerOnly) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		if cred, err := PeerCred(c); err == nil && (cred.Uid == 0 || int(cred.Uid) == os.Geteuid()) {
			return c, nil
		}
		c.Close()
	}
}

// PeerCred returns the credentials (SO_PEERCRED) of the process at the
// other end of c.
func PeerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var (
		cred *unix.Ucred
		gerr error
	)
	if err := raw.Control(func(fd uintptr) {
		cred, gerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, gerr
}
