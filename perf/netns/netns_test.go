package netns

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestSysctlPath(t *testing.T) {
	for key, want := range map[string]string{
		"net.ipv4.ip_forward":                "/proc/sys/net/ipv4/ip_forward",
		"net/ipv4/conf/flannel.1/rp_filter":  "/proc/sys/net/ipv4/conf/flannel.1/rp_filter",
		"/net/ipv6/conf/all/disable_ipv6":    "/proc/sys/net/ipv6/conf/all/disable_ipv6",
		"net.ipv4.conf.all.accept_redirects": "/proc/sys/net/ipv4/conf/all/accept_redirects",
	} {
		got, err := sysctlPath(key)
		if err != nil || got != want {
			t.Errorf("sysctlPath(%q) = %q, %v; want %q", key, got, err, want)
		}
	}
	for _, key := range []string{"", "net/../../etc/passwd"} {
		if _, err := sysctlPath(key); err == nil {
			t.Errorf("sysctlPath(%q) succeeded, want an error", key)
		}
	}
}

func TestPrefix(t *testing.T) {
	a, b := Prefix("Test/Sub Case"), Prefix("Test/Sub Case")
	if a == b {
		t.Fatalf("Prefix returned %q twice", a)
	}
	if !strings.HasPrefix(a, "ovd-test-sub-case-") || strings.ContainsAny(a, "/ ") {
		t.Errorf("Prefix = %q, want ovd-test-sub-case-<pid>-<seq>", a)
	}
	// A tag field of digits cannot be taken for the pid.
	n := Prefix("mtu 1500")
	if pid, ok := ownerPid(n + "-h1"); !strings.HasPrefix(n, "ovd-mtu-1500x-") || !ok || pid != os.Getpid() {
		t.Errorf("Prefix(\"mtu 1500\") = %q, owner %d, %v; want ovd-mtu-1500x-<pid>-<seq> owned by %d", n, pid, ok, os.Getpid())
	}
}

func TestCheckName(t *testing.T) {
	for _, name := range []string{"", ".", "..", "a/b"} {
		if checkName(name) == nil {
			t.Errorf("checkName(%q) = nil, want an error", name)
		}
	}
}

func skipUnlessAvailable(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("skipping: %v", err)
	}
}

// newNS makes a namespace under prefix and deletes it when the test ends.
func newNS(t *testing.T, prefix, suffix string) *NS {
	t.Helper()
	n, err := New(prefix + "-" + suffix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Delete(); err != nil {
			t.Error(err)
		}
	})
	return n
}

// checkGone fails the test if any namespace under prefix is left.
func checkGone(t *testing.T, prefix string) {
	t.Helper()
	names, err := List(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) > 0 {
		t.Errorf("namespaces left behind: %v", names)
	}
}

func mustIP(t *testing.T, n *NS, args ...string) {
	t.Helper()
	if err := n.IP(context.Background(), args...); err != nil {
		t.Fatal(err)
	}
}

// TestDoEntersNamespace listens in one namespace and dials it from another
// over a veth pair: both sockets must have been made inside their namespace,
// since neither address exists anywhere else.
func TestDoEntersNamespace(t *testing.T) {
	skipUnlessAvailable(t)
	t.Parallel()
	prefix := Prefix("netns-do")
	t.Cleanup(func() { checkGone(t, prefix) })
	a, b := newNS(t, prefix, "a"), newNS(t, prefix, "b")

	mustIP(t, a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b.Name)
	mustIP(t, a, "addr", "add", "198.18.1.1/24", "dev", "eth0")
	mustIP(t, b, "addr", "add", "198.18.1.2/24", "dev", "eth0")
	mustIP(t, a, "link", "set", "eth0", "up")
	mustIP(t, b, "link", "set", "eth0", "up")

	before, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var inside string
	if err := a.Do(func() error {
		var err error
		inside, err = os.Readlink("/proc/thread-self/ns/net")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inside == before {
		t.Errorf("Do ran in the caller's namespace %s", inside)
	}
	if after, _ := os.Readlink("/proc/thread-self/ns/net"); after != before {
		t.Errorf("caller's namespace changed from %s to %s", before, after)
	}

	ln, err := a.Listen("tcp4", "198.18.1.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(c, c) // echo until the client half-closes
		accepted <- err
	}()

	c, err := b.DialContext(context.Background(), "tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.LocalAddr().String(); !strings.HasPrefix(got, "198.18.1.2:") {
		t.Errorf("client bound to %s, want 198.18.1.2", got)
	}
	msg := []byte("hello from b")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	echo, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(echo, msg) {
		t.Errorf("echo = %q, want %q", echo, msg)
	}
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}

	// The addresses exist only inside the namespaces.
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range addrs {
		if strings.HasPrefix(addr.String(), "198.18.1.") {
			t.Errorf("%s leaked into the caller's namespace", addr)
		}
	}
}

func TestDoErrorsAndPanics(t *testing.T) {
	skipUnlessAvailable(t)
	t.Parallel()
	prefix := Prefix("netns-doerr")
	t.Cleanup(func() { checkGone(t, prefix) })
	n := newNS(t, prefix, "a")

	sentinel := errors.New("sentinel")
	if err := n.Do(func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("Do returned %v, want %v", err, sentinel)
	}

	func() {
		defer func() {
			if r := recover(); r == nil || !strings.Contains(r.(string), "boom") {
				t.Errorf("recovered %v, want the panic from fn", r)
			}
		}()
		n.Do(func() error { panic("boom") })
	}()

	gone := &NS{Name: prefix + "-missing"}
	if err := gone.Do(func() error { return nil }); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Do in a missing namespace returned %v, want ErrNotExist", err)
	}
}

func TestNewDeleteList(t *testing.T) {
	skipUnlessAvailable(t)
	t.Parallel()
	prefix := Prefix("netns-life")
	t.Cleanup(func() { checkGone(t, prefix) })

	n := newNS(t, prefix, "a")
	if _, err := New(n.Name); !errors.Is(err, fs.ErrExist) {
		t.Errorf("New of an existing name returned %v, want ErrExist", err)
	}
	names, err := List(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != n.Name {
		t.Errorf("List(%q) = %v, want [%s]", prefix, names, n.Name)
	}
	if err := n.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := n.Delete(); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

func TestExecAndSysctl(t *testing.T) {
	skipUnlessAvailable(t)
	t.Parallel()
	prefix := Prefix("netns-exec")
	t.Cleanup(func() { checkGone(t, prefix) })
	n := newNS(t, prefix, "a")
	ctx := context.Background()

	out, err := n.Exec(ctx, "ip", "-o", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.Contains(lines[0], ": lo:") {
		t.Errorf("a new namespace should only have lo, got:\n%s", out)
	}

	_, err = n.Exec(ctx, "ip", "link", "show", "no-such-device")
	if err == nil || !strings.Contains(err.Error(), "no-such-device") {
		t.Errorf("failing Exec returned %v, want an error carrying the output", err)
	}

	rootBefore, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"1", "0", "1"} {
		if err := n.Sysctl("net.ipv4.ip_forward", v); err != nil {
			t.Fatal(err)
		}
		out, err := n.Exec(ctx, "cat", "/proc/sys/net/ipv4/ip_forward")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(out)); got != v {
			t.Errorf("ip_forward in %s = %s, want %s", n.Name, got, v)
		}
	}
	rootAfter, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rootBefore, rootAfter) {
		t.Errorf("Sysctl changed the caller's ip_forward from %q to %q", rootBefore, rootAfter)
	}
	if err := n.Sysctl("net.ipv4.no_such_key", "1"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Sysctl of a missing key returned %v, want ErrNotExist", err)
	}
}

func TestCommand(t *testing.T) {
	skipUnlessAvailable(t)
	t.Parallel()
	prefix := Prefix("netns-cmd")
	t.Cleanup(func() { checkGone(t, prefix) })
	n := newNS(t, prefix, "a")

	// The shell reports its namespace, then keeps running as sleep.
	cmd := n.Command(context.Background(), "sh", "-c", "readlink /proc/self/ns/net; exec sleep 3600")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()

	reported, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var inside string
	if err := n.Do(func() error {
		inside, err = os.Readlink("/proc/thread-self/ns/net")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(reported) != inside {
		t.Errorf("command runs in %s, want %s", reported, inside)
	}
	// ip execs the program in place, so the pid we hold is the program's.
	byPid, err := os.Readlink("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if byPid != inside {
		t.Errorf("pid %d is in %s, want %s", cmd.Process.Pid, byPid, inside)
	}
}
