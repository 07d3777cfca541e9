// Package netns manages the named network namespaces that emulate hosts and
// containers in overlayd's tests and benchmarks.
//
// A namespace is what `ip netns add` makes: a file under /run/netns that
// pins it, so shell tools (`ip netns exec`, `ip -n`) and this package see the
// same thing. Everything here needs root on Linux; call [Available] first and
// skip when it reports an error.
//
// Namespace code never switches the calling goroutine: [NS.Do] runs its
// function on a fresh goroutine whose OS thread enters the namespace and is
// discarded afterwards. Sockets remember the namespace they were created in,
// so a socket made inside Do can be used from any goroutine.
package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
)

// Dir is where iproute2 keeps its named namespaces.
const Dir = "/run/netns"

// NS is a named network namespace, pinned at Dir/Name.
type NS struct {
	Name string
}

// New creates the named namespace (`ip netns add name`). The caller picks a
// unique name, usually from [Prefix]; it is an error if the name exists.
func New(name string) (*NS, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	n := &NS{Name: name}
	if _, err := os.Stat(n.Path()); err == nil {
		return nil, fmt.Errorf("netns %s: %w", name, fs.ErrExist)
	}
	if _, err := runIP(context.Background(), "netns", "add", name); err != nil {
		return nil, err
	}
	return n, nil
}

// Path is the namespace's pin file, usable with setns(2).
func (n *NS) Path() string { return filepath.Join(Dir, n.Name) }

// Delete removes the namespace (`ip netns del`). Deleting a namespace that is
// already gone is not an error. Processes still running inside keep the
// namespace alive until they exit; Delete does not kill them.
func (n *NS) Delete() error {
	if _, err := os.Stat(n.Path()); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if _, err := runIP(context.Background(), "netns", "del", n.Name); err != nil {
		if _, statErr := os.Stat(n.Path()); errors.Is(statErr, fs.ErrNotExist) {
			return nil // lost a race with another Delete
		}
		return err
	}
	return nil
}

// Do runs fn on a new goroutine whose OS thread has entered n, and waits for
// it. The thread stays locked and is thrown away when the goroutine ends, so
// no other goroutine ever runs in n by accident, and the caller's goroutine
// never changes namespace. A panic in fn is re-raised in the caller.
//
// Only work done on fn's own goroutine happens in n: sockets opened there
// belong to n for their whole life, but goroutines that fn starts, and name
// resolution, run in the process's namespace.
func (n *NS) Do(fn func() error) error {
	type outcome struct {
		err      error
		panicked bool
		value    any
		stack    []byte
	}
	done := make(chan outcome, 1)
	go func() {
		// Deliberately never unlocked: when this goroutine returns, the
		// runtime terminates the thread instead of reusing it elsewhere.
		runtime.LockOSThread()
		returned := false
		defer func() {
			if !returned {
				r := recover()
				done <- outcome{panicked: true, value: r, stack: debug.Stack()}
			}
		}()
		err := enter(n.Path())
		if err == nil {
			err = fn()
		} else {
			err = fmt.Errorf("netns %s: enter: %w", n.Name, err)
		}
		returned = true
		done <- outcome{err: err}
	}()
	o := <-done
	if o.panicked {
		if o.value == nil { // runtime.Goexit, e.g. t.FailNow on the wrong goroutine
			return fmt.Errorf("netns %s: Do: fn exited its goroutine without returning", n.Name)
		}
		panic(fmt.Sprintf("netns %s: Do: %v\n\n%s", n.Name, o.value, o.stack))
	}
	return o.err
}

// Exec runs `ip netns exec <n> name args...` and waits for it. The combined
// output is returned, and is part of the error when the command fails.
func (n *NS) Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := n.Command(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, commandError(cmd, out, err)
	}
	return out, nil
}

// Command prepares `ip netns exec <n> name args...` for a long-running
// process. ip execs the program in place, so cmd.Process.Pid is the program
// itself; the caller starts it and ends it by that pid (or by cancelling ctx).
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, ipPath(), append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// IP runs iproute2 against the namespace, `ip -n <n> args...`, e.g.
// n.IP(ctx, "addr", "add", "198.18.0.1/24", "dev", "eth0").
func (n *NS) IP(ctx context.Context, args ...string) error {
	_, err := runIP(ctx, append([]string{"-n", n.Name}, args...)...)
	return err
}

// DialContext dials addr from inside n. addr should be an IP literal: name
// resolution would run outside the namespace.
func (n *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", n.Name, err)
	}
	return c, nil
}

// Listen opens a listener inside n.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", n.Name, err)
	}
	return l, nil
}

// Sysctl sets a kernel parameter inside n, e.g. Sysctl("net.ipv4.ip_forward",
// "1"), by writing its file under /proc/sys from a thread inside n. As with
// sysctl(8), a key that contains '/' uses '/' as the separator, so dots can
// appear in interface names: "net/ipv4/conf/flannel.1/rp_filter".
func (n *NS) Sysctl(key, value string) error {
	path, err := sysctlPath(key)
	if err != nil {
		return err
	}
	err = n.Do(func() error {
		return os.WriteFile(path, []byte(value), 0)
	})
	if err != nil {
		return fmt.Errorf("netns %s: sysctl %s=%s: %w", n.Name, key, value, err)
	}
	return nil
}

func sysctlPath(key string) (string, error) {
	if key == "" || strings.Contains(key, "..") {
		return "", fmt.Errorf("sysctl key %q: invalid", key)
	}
	if !strings.Contains(key, "/") {
		key = strings.ReplaceAll(key, ".", "/")
	}
	return filepath.Join("/proc/sys", strings.TrimPrefix(key, "/")), nil
}

var prefixSeq atomic.Uint64

// Prefix returns a fresh name prefix for one test or run,
// "ovd-<tag>-<pid>-<seq>": the pid keeps concurrent processes apart and the
// sequence number keeps the calls of one process apart. Names derived from it
// should be prefix + "-" + something, which is what [List] looks for. The tag
// is reduced to lower-case letters, digits and '-'.
func Prefix(tag string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(tag) {
		switch {
		case 'a' <= r && r <= 'z', '0' <= r && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	// A tag field of digits only gets an x, so that the first such field
	// of a name is always the pid (ownerPid, Stale).
	fields := strings.Split(strings.Trim(b.String(), "-"), "-")
	for i, f := range fields {
		if f != "" && strings.Trim(f, "0123456789") == "" {
			fields[i] = f + "x"
		}
	}
	return fmt.Sprintf("ovd-%s-%d-%d", strings.Join(fields, "-"), os.Getpid(), prefixSeq.Add(1))
}

// List returns the named namespaces that belong to prefix: prefix itself and
// every name that starts with prefix + "-".
func List(prefix string) ([]string, error) {
	entries, err := os.ReadDir(Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	var names []string
	for _, e := range entries {
		if name := e.Name(); name == prefix || strings.HasPrefix(name, prefix+"-") {
			names = append(names, name)
		}
	}
	return names, nil
}

// Available reports why namespaces cannot be used here, or nil if they can:
// it needs Linux, root and iproute2's ip. Tests skip with the error.
func Available() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("network namespaces need Linux: %w", errors.ErrUnsupported)
	}
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root")
	}
	if _, err := exec.LookPath(ipPath()); err != nil {
		return fmt.Errorf("iproute2 ip not found: %w", err)
	}
	return nil
}

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("netns name %q: invalid", name)
	}
	return nil
}

// ipPath finds iproute2's ip, which lives in /usr/sbin, often not on a
// non-root PATH.
var ipPath = sync.OnceValue(func() string {
	if p, err := exec.LookPath("ip"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "ip"
})

func runIP(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, ipPath(), args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, commandError(cmd, out, err)
	}
	return out, nil
}

// commandError names the command and carries what it printed.
func commandError(cmd *exec.Cmd, out []byte, err error) error {
	args := strings.Join(cmd.Args[1:], " ")
	if msg := bytes.TrimSpace(out); len(msg) > 0 {
		return fmt.Errorf("%s %s: %w: %s", filepath.Base(cmd.Path), args, err, msg)
	}
	return fmt.Errorf("%s %s: %w", filepath.Base(cmd.Path), args, err)
}
