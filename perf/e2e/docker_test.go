package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/overlayd/overlayd/perf/cluster"
	"github.com/overlayd/overlayd/perf/netns"
)

// Docker bridge networks across hosts, with real Docker: one dockerd per
// emulated host (Debian's docker.io), started on the subnet file as the
// README says, with its own iptables rules and FORWARD DROP, and overlayd
// with --ip-masq. The recipe is ../../../shared/USERS.md C.3.

const (
	dockerImage = "localbusybox:1"
	httpPort    = 8080 // busybox httpd in every container
)

// dockerTools are the programs the test runs.
type dockerTools struct{ dockerd, docker, nsenter, busybox string }

// requireDocker skips where dockerd cannot run at all: not installed, or
// no cgroups to put containers in.
func requireDocker(t *testing.T) dockerTools {
	t.Helper()
	var tl dockerTools
	var err error
	// Debian's docker.io first: its CLI matches its dockerd. Another
	// docker on the PATH (/usr/local/bin) may be newer, which works too
	// (the API is negotiated down).
	if tl.dockerd, err = lookFirst("/usr/sbin/dockerd", "dockerd"); err != nil {
		t.Skip("dockerd not installed (Debian: apt-get install docker.io; .ci/run does)")
	}
	if tl.docker, err = lookFirst("/usr/bin/docker", "docker"); err != nil {
		t.Skip("docker CLI not installed (Debian: apt-get install docker.io; .ci/run does)")
	}
	if tl.nsenter, err = exec.LookPath("nsenter"); err != nil {
		t.Skip("nsenter not installed (Debian: util-linux)")
	}
	if tl.busybox, err = staticBusybox(); err != nil {
		t.Skipf("no image for the containers: %v (Debian: apt-get install busybox-static)", err)
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("iptables not installed (Debian: apt-get install iptables; docker.io depends on it)")
	}
	if ents, err := os.ReadDir("/sys/fs/cgroup"); err != nil || len(ents) == 0 {
		t.Skipf("dockerd cannot run here: /sys/fs/cgroup is empty or unreadable (%v)", err)
	}
	return tl
}

// lookFirst is path if it is there, else name from the PATH.
func lookFirst(path, name string) (string, error) {
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	return exec.LookPath(name)
}

// staticBusybox finds a busybox that runs in an empty root: no ELF
// interpreter, so no libc needed.
func staticBusybox() (string, error) {
	path, err := exec.LookPath("busybox")
	if err != nil {
		return "", err
	}
	f, err := elf.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", fmt.Errorf("%s is dynamically linked", path)
		}
	}
	return path, nil
}

// busyboxImage writes the rootfs tarball `docker import` makes the image
// of: busybox with the applets used, and a CGI script that answers with
// the address the request came from.
func busyboxImage(t *testing.T, busybox string) string {
	t.Helper()
	bin, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	cgi := "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s' \"$REMOTE_ADDR\"\n"
	path := filepath.Join(t.TempDir(), "rootfs.tar")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body []byte) {
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin/", "www/", "www/cgi-bin/", "tmp/", "etc/"} {
		add(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	}
	add(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755}, bin)
	for _, a := range []string{"sh", "httpd", "wget", "timeout", "sleep", "ip", "ping", "cat", "printf"} {
		add(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}, nil)
	}
	add(&tar.Header{Name: "www/cgi-bin/ip", Typeflag: tar.TypeReg, Mode: 0o755}, []byte(cgi))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// dockerHost is a dockerd on one emulated host, with one container.
type dockerHost struct {
	tools dockerTools
	d     *cluster.Daemon
	ns    *netns.NS
	name  string // for paths: the host's namespace name
	argv  []string
	sock  string
	log   string
	proc  *cluster.Process
	ctr   string     // the container's name
	addr  netip.Addr // the container's address
}

// startDocker runs dockerd in d's host as the README says: --bip and --mtu
// from overlayd's subnet file, and --ip-masq=false since overlayd
// masquerades (FLANNEL_IPMASQ=true). Docker's own iptables rules stay on,
// with its FORWARD DROP where it turns forwarding on. Everything dockerd
// makes is removed when the test ends.
func startDocker(t *testing.T, tl dockerTools, d *cluster.Daemon, empty string) *dockerHost {
	t.Helper()
	if !d.Env.IPMasq {
		t.Fatalf("%s: subnet file has FLANNEL_IPMASQ=false under --ip-masq", d.Name())
	}
	h := &dockerHost{tools: tl, d: d, ns: d.Host.NS, name: d.Host.NS.Name, ctr: "c" + d.Name()}
	// Short paths under /run: containerd's sockets live in the exec root,
	// and a unix socket path has 108 bytes at most.
	execRoot := "/run/" + h.name + "-docker"
	dataRoot := "/var/tmp/" + h.name + "-docker"
	pidfile := "/run/" + h.name + "-docker.pid"
	h.sock = "/run/" + h.name + "-docker.sock"
	h.log = filepath.Join(d.Dir, "dockerd.log")
	h.argv = []string{tl.nsenter, "--net=" + h.ns.Path(), tl.dockerd,
		"--data-root", dataRoot, "--exec-root", execRoot, "--pidfile", pidfile,
		"-H", "unix://" + h.sock, "--config-file", empty,
		"--bip", d.Env.Subnet.String(), "--mtu", strconv.Itoa(d.Env.MTU),
		"--ip-masq=false", "--iptables=true", "--shutdown-timeout", "2"}
	t.Cleanup(func() {
		if h.proc != nil {
			h.run(context.Background(), "rm", "-f", h.ctr) // best effort: dockerd stops it anyway
			if err := h.proc.Stop(); err != nil {
				t.Errorf("%s: stop dockerd: %v", h.name, err)
			}
		}
		for _, p := range []string{dataRoot, execRoot, pidfile, h.sock} {
			if err := os.RemoveAll(p); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	h.start(t)
	return h
}

func (h *dockerHost) start(t *testing.T) {
	t.Helper()
	p, err := cluster.StartCommand(h.log, h.argv...)
	if err != nil {
		t.Fatalf("%s: start dockerd: %v", h.name, err)
	}
	h.proc = p
	t.Logf("%s: dockerd pid %d, bip %s", h.d.Name(), p.Pid(), h.d.Env.Subnet)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := h.run(context.Background(), "version"); err == nil {
			return
		}
		if p.Exited() {
			t.Fatalf("%s: dockerd exited:\n%s", h.name, p.Tail(4096))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: dockerd not answering after 60s:\n%s", h.name, p.Tail(4096))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// restart stops dockerd and starts it again; the container comes back by
// its restart policy, maybe with another address.
func (h *dockerHost) restart(t *testing.T) {
	t.Helper()
	if err := h.proc.Stop(); err != nil {
		t.Fatalf("%s: stop dockerd: %v", h.name, err)
	}
	h.start(t)
	h.waitContainer(t)
}

// run is the docker CLI against this host's dockerd.
func (h *dockerHost) run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.tools.docker, append([]string{"-H", "unix://" + h.sock}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return strings.TrimSpace(string(out)), nil
}

func (h *dockerHost) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := h.run(context.Background(), args...)
	if err != nil {
		t.Fatalf("%s: %v", h.name, err)
	}
	return out
}

// runContainer imports the image and starts the container: busybox httpd
// on IPv4, with tini as PID 1 so that it stops on SIGTERM.
func (h *dockerHost) runContainer(t *testing.T, image string) {
	t.Helper()
	h.must(t, "import", image, dockerImage)
	h.must(t, "run", "-d", "--init", "--restart=always", "--name", h.ctr, dockerImage,
		"httpd", "-f", "-p", "0.0.0.0:"+strconv.Itoa(httpPort), "-h", "/www")
	h.waitContainer(t)
}

// waitContainer waits until the container runs and reads its address.
func (h *dockerHost) waitContainer(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := h.run(context.Background(), "inspect", "-f", "{{.State.Running}} {{.NetworkSettings.IPAddress}}", h.ctr)
		if running, ip, _ := strings.Cut(out, " "); err == nil && running == "true" {
			if a, err := netip.ParseAddr(ip); err == nil {
				if !h.d.Env.Subnet.Contains(a) {
					t.Fatalf("%s: container %s has %s, outside the lease %s", h.name, h.ctr, a, h.d.Env.Subnet)
				}
				h.addr = a
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: container %s not running after 60s: %q %v", h.name, h.ctr, out, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// fetch is the body of url as the container gets it with busybox wget
// (whose own -T crashes the static build: timeout instead).
func (h *dockerHost) fetch(url string) (string, error) {
	return h.run(context.Background(), "exec", h.ctr, "timeout", "3", "wget", "-q", "-O", "-", url)
}

// iptables runs iptables in the host's namespace.
func (h *dockerHost) iptables(t *testing.T, args ...string) string {
	t.Helper()
	out, err := h.ns.Exec(context.Background(), "iptables", args...)
	if err != nil {
		t.Fatalf("%s: %v", h.name, err)
	}
	return string(out)
}

// overlaydRules are overlayd's lines of iptables-save, without counters.
func (h *dockerHost) overlaydRules(t *testing.T) []string {
	t.Helper()
	out, err := h.ns.Exec(context.Background(), "iptables-save")
	if err != nil {
		t.Fatalf("%s: %v", h.name, err)
	}
	var rules []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "OVERLAYD") {
			l, _, _ = strings.Cut(l, " [") // a chain's counters
			rules = append(rules, l)
		}
	}
	return rules
}

// outsideServer is an HTTP server on the underlay switch, 198.18.0.254: a
// host outside the overlay with no route back into it. It answers with the
// address the request came from.
func outsideServer(t *testing.T, sw *netns.NS, addr netip.Addr) string {
	t.Helper()
	ln, err := sw.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprint(w, host)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/"
}

// checkDockerTraffic: every container reaches every other one and sees
// its own address, and reaches the outside host, which sees the host's
// underlay address (masqueraded). Each check retries until it passes or
// 30 s are gone: after a restart, traffic must come back by itself.
func checkDockerTraffic(t *testing.T, hosts []*dockerHost, outside string) {
	t.Helper()
	check := func(from *dockerHost, url, want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, err := from.fetch(url)
			got = strings.TrimPrefix(got, "::ffff:")
			if err == nil && got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s (%s) -> %s: got %q, %v; want %s", from.d.Name(), from.addr, url, got, err, want)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	start := time.Now()
	for _, from := range hosts {
		for _, to := range hosts {
			if from != to {
				check(from, fmt.Sprintf("http://%s:%d/cgi-bin/ip", to.addr, httpPort), from.addr.String())
			}
		}
		check(from, outside, from.d.Host.Underlay.Addr().String())
	}
	t.Logf("all %d container pairs see each other's own address; all reach %s masqueraded (%s)",
		len(hosts)*(len(hosts)-1), outside, time.Since(start).Round(time.Millisecond))
}

// TestDockerAcrossHosts: three hosts, each with a real dockerd on the
// lease overlayd wrote, one of them with forwarding off before dockerd
// started (so Docker sets FORWARD DROP there). Containers reach each other
// with their own addresses and the outside through masquerade, and do so
// again after overlayd restarts, dockerd restarts, and the rules are
// flushed behind overlayd's back.
func TestDockerAcrossHosts(t *testing.T) {
	requireRoot(t)
	tl := requireDocker(t)
	t.Cleanup(dockerLeftovers(t)) // runs last: after every dockerd stopped
	c := startCluster(t, 3, cluster.Options{NoContainers: true, DaemonArgs: []string{"--ip-masq", "--iptables-resync", "1"}})
	image := busyboxImage(t, tl.busybox)
	empty := filepath.Join(t.TempDir(), "daemon.json") // so /etc/docker/daemon.json is never read
	if err := os.WriteFile(empty, []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dropHost := c.Daemons[2]
	if err := dropHost.Host.NS.Sysctl("net.ipv4.ip_forward", "0"); err != nil {
		t.Fatal(err)
	}
	var hosts []*dockerHost
	for _, d := range c.Daemons {
		hosts = append(hosts, startDocker(t, tl, d, empty))
	}
	if fwd := hosts[2].iptables(t, "-S", "FORWARD"); !strings.Contains(fwd, "-P FORWARD DROP") {
		t.Fatalf("%s: dockerd did not set FORWARD DROP after turning forwarding on; the test would prove nothing:\n%s", dropHost.Name(), fwd)
	}
	for _, h := range hosts {
		h.runContainer(t, image)
	}
	outside := outsideServer(t, c.Topo.Switch, c.Topo.SwitchAddr)
	checkDockerTraffic(t, hosts, outside)
	save, _ := hosts[2].ns.Exec(context.Background(), "iptables-save")
	t.Logf("%s iptables-save (Docker's rules and overlayd's):\n%s", dropHost.Name(), save)

	t.Run("OverlaydRestart", func(t *testing.T) {
		h := hosts[1]
		before := h.overlaydRules(t)
		if err := h.d.Stop(); err != nil {
			t.Fatal(err)
		}
		if during := h.overlaydRules(t); !equalLines(during, before) {
			t.Errorf("rules while overlayd is stopped:\n%s\nwant them left in place:\n%s", strings.Join(during, "\n"), strings.Join(before, "\n"))
		}
		if err := h.d.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := h.d.WaitReady(context.Background()); err != nil {
			t.Fatal(err)
		}
		if after := h.overlaydRules(t); !equalLines(after, before) {
			t.Errorf("rules after the restart:\n%s\nwant the same as before:\n%s", strings.Join(after, "\n"), strings.Join(before, "\n"))
		}
		checkDockerTraffic(t, hosts, outside)
	})

	// Docker 28 accepts replies into docker0 and then drops whatever else
	// enters it from another interface, in its own FORWARD chains, ahead
	// of a jump appended to FORWARD; only DOCKER-USER comes before them.
	// Docker 20.10 with those two rules after its DOCKER-USER jump is such
	// a host.
	t.Run("Docker28Forward", func(t *testing.T) {
		docker28 := [][]string{
			{"-o", "docker0", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
			{"!", "-i", "docker0", "-o", "docker0", "-j", "DROP"},
		}
		for _, h := range hosts {
			if fwd := strings.Split(h.iptables(t, "-S", "FORWARD"), "\n"); len(fwd) < 2 || fwd[1] != "-A FORWARD -j DOCKER-USER" {
				t.Fatalf("%s: FORWARD does not start with the jump to DOCKER-USER:\n%s", h.name, strings.Join(fwd, "\n"))
			}
			for i, r := range docker28 {
				h.iptables(t, append([]string{"-I", "FORWARD", strconv.Itoa(2 + i)}, r...)...)
				t.Cleanup(func() { h.iptables(t, append([]string{"-D", "FORWARD"}, r...)...) })
			}
		}
		checkDockerTraffic(t, hosts, outside)
		checkForgedSourceDropped(t, c.Topo.Switch, hosts[0], unleasedAddr(t, c))
	})

	t.Run("DockerdRestart", func(t *testing.T) {
		hosts[2].restart(t)
		checkDockerTraffic(t, hosts, outside)
	})

	t.Run("RulesFlushed", func(t *testing.T) {
		h := hosts[2]
		before := h.overlaydRules(t)
		h.iptables(t, "-F", "OVERLAYD-FWD")
		h.iptables(t, "-t", "nat", "-F", "OVERLAYD-POSTRTG")
		checkDockerTraffic(t, hosts, outside)
		if after := h.overlaydRules(t); !equalLines(after, before) {
			t.Errorf("rules after the flush:\n%s\nwant them put back:\n%s", strings.Join(after, "\n"), strings.Join(before, "\n"))
		}
		log, _ := os.ReadFile(filepath.Join(h.d.Dir, "overlayd.log"))
		if !bytes.Contains(log, []byte("packet filter rules put back")) {
			t.Error("overlayd did not log that it put the rules back")
		}
	})

	t.Run("ReleaseOnExitRemovesRules", func(t *testing.T) {
		h := hosts[0]
		restart(t, h.d, "--release-on-exit")
		if err := h.d.Stop(); err != nil {
			t.Fatal(err)
		}
		if left := h.overlaydRules(t); len(left) != 0 {
			t.Errorf("rules left after --release-on-exit:\n%s", strings.Join(left, "\n"))
		}
	})
}

// checkForgedSourceDropped: a sender on the underlay that forges a source
// inside the network (here the switch, with an address no host leased)
// does not reach h's container on a Docker 28 host. OVERLAYD-FWD-IN
// accepts the network's sources only from the overlay's device, so
// Docker's drop of what enters docker0 from elsewhere stands. The
// datagrams go to a closed UDP port: a container that got one would count
// it in its Udp NoPorts.
func checkForgedSourceDropped(t *testing.T, sw *netns.NS, h *dockerHost, forged netip.Addr) {
	t.Helper()
	const n = 5
	ctx := context.Background()
	// rp_filter off, so that the packets reach FORWARD at all; as it was
	// when the check ends.
	for _, key := range []string{"net/ipv4/conf/all/rp_filter", "net/ipv4/conf/" + h.d.Host.Iface + "/rp_filter"} {
		old, err := h.ns.Exec(ctx, "cat", "/proc/sys/"+key)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.ns.Sysctl(key, strings.TrimSpace(string(old))) })
		if err := h.ns.Sysctl(key, "0"); err != nil {
			t.Fatal(err)
		}
	}
	// The switch sends from the forged address, routed to h.
	src, subnet := forged.String()+"/32", h.d.Env.Subnet.Masked().String()
	t.Cleanup(func() { // whichever of the two got added
		sw.IP(ctx, "route", "del", subnet)
		sw.IP(ctx, "addr", "del", src, "dev", "lo")
	})
	for _, args := range [][]string{
		{"addr", "add", src, "dev", "lo"},
		{"route", "add", subnet, "via", h.d.Host.Underlay.Addr().String()},
	} {
		if err := sw.IP(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	dropsBefore, noPortsBefore := dockerDrops(t, h), h.udpNoPorts(t)
	err := sw.Do(func() error {
		conn, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(forged, 0)),
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(h.addr, 9)))
		if err != nil {
			return err
		}
		defer conn.Close()
		for range n {
			if _, err := conn.Write([]byte("forged")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The datagrams end either in Docker's drop (its counter shows they
	// reached FORWARD) or in the container; both are read until one has
	// them all (the switch's bridge and the host's stack are
	// asynchronous).
	var drops, got int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		drops, got = dockerDrops(t, h)-dropsBefore, h.udpNoPorts(t)-noPortsBefore
		if drops >= n || got >= n || time.Now().After(deadline) {
			break
		}
	}
	if got != 0 {
		t.Fatalf("%s: container %s counted %d datagrams from the forged source %s (Udp NoPorts); want 0:\n%s",
			h.name, h.addr, got, forged, h.iptables(t, "-S", "OVERLAYD-FWD-IN"))
	}
	if drops < n {
		t.Fatalf("%s: Docker's drop into docker0 counted %d of %d forged datagrams from %s, the container none; the check proves nothing:\n%s",
			h.name, drops, n, forged, h.iptables(t, "-L", "FORWARD", "-v", "-x", "-n"))
	}
	t.Logf("%s: %d datagrams from %s on the underlay with a forged overlay source: dropped by Docker's rule, none reached the container", h.name, n, forged)
}

// dockerDrops is the packet count of Docker 28's drop of what enters
// docker0 from another interface.
func dockerDrops(t *testing.T, h *dockerHost) int {
	t.Helper()
	out, err := h.ns.Exec(context.Background(), "iptables-save", "-c", "-t", "filter")
	if err != nil {
		t.Fatalf("%s: %v", h.name, err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if counters, rule, ok := strings.Cut(l, " "); ok && rule == "-A FORWARD ! -i docker0 -o docker0 -j DROP" {
			pkts, _, _ := strings.Cut(strings.Trim(counters, "[]"), ":")
			n, err := strconv.Atoi(pkts)
			if err != nil {
				t.Fatalf("%s: counters %q: %v", h.name, counters, err)
			}
			return n
		}
	}
	t.Fatalf("%s: no Docker 28 drop rule in FORWARD:\n%s", h.name, out)
	return 0
}

// udpNoPorts is the container's Udp NoPorts: datagrams it received for a
// port nobody listens on.
func (h *dockerHost) udpNoPorts(t *testing.T) int {
	t.Helper()
	pid := h.must(t, "inspect", "-f", "{{.State.Pid}}", h.ctr)
	snmp, err := os.ReadFile("/proc/" + pid + "/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	return int(snmpValue(t, snmp, h.name+" container "+h.ctr, "Udp:", "NoPorts"))
}

func equalLines(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n")
}

// dockerLeftovers notes what dockerd makes outside the paths it is given,
// and returns the cleanup that removes what was not there before: only
// files and empty directories, so that a real Docker on the machine keeps
// its own.
func dockerLeftovers(t *testing.T) func() {
	paths := []string{"/etc/docker/key.json", "/run/docker/plugins", "/run/docker", "/run/containerd/s", "/run/containerd", "/etc/docker"}
	var absent []string
	for _, p := range paths {
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			absent = append(absent, p)
		}
	}
	return func() {
		for _, p := range absent {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Logf("leftover of dockerd kept: %v", err)
			}
		}
	}
}
