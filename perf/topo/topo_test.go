package topo_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/overlayd/overlayd/perf/netns"
	"github.com/overlayd/overlayd/perf/topo"
	"github.com/overlayd/overlayd/perf/traffic"
)

// answerWithin bounds the wait for a ping that must be answered; it only
// matters when something is broken.
const answerWithin = 5 * time.Second

func TestOptionsRejected(t *testing.T) {
	for _, opts := range []topo.Options{
		{Hosts: 1},
		{Hosts: 9},
		{Hosts: 2, UnderlayMTU: 67},
		{Hosts: 2, UnderlayMTU: 65536},
	} {
		prefix := netns.Prefix("topo-reject")
		opts.Prefix = prefix
		if c, err := topo.New(context.Background(), opts); err == nil {
			c.Close()
			t.Errorf("New(%+v) succeeded, want an error", opts)
		}
		if names, _ := netns.List(prefix); len(names) > 0 {
			t.Errorf("New(%+v) left %v", opts, names)
		}
	}
}

// newCluster builds a cluster that is closed, and checked for leftovers,
// when the test ends.
func newCluster(t *testing.T, opts topo.Options) *topo.Cluster {
	t.Helper()
	if err := netns.Available(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	if opts.Prefix == "" {
		opts.Prefix = netns.Prefix("topo")
	}
	c, err := topo.New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
		if names, err := netns.List(opts.Prefix); err != nil || len(names) > 0 {
			t.Errorf("namespaces left behind: %v %v", names, err)
		}
	})
	return c
}

func mustPing(t *testing.T, from *netns.NS, dst netip.Addr, size int) {
	t.Helper()
	r, err := traffic.Ping(context.Background(), from, dst, size, true, answerWithin)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Reply || r.From != dst {
		t.Errorf("%s → %s (%d bytes): got %v, want a reply", from.Name, dst, size, r)
	}
}

func TestClusterUnderlay(t *testing.T) {
	t.Parallel()
	c := newCluster(t, topo.Options{Hosts: 3})
	if len(c.Hosts) != 3 || c.SwitchAddr != netip.MustParseAddr("198.18.0.254") {
		t.Fatalf("got %d hosts, switch %s", len(c.Hosts), c.SwitchAddr)
	}
	for i, h := range c.Hosts {
		want := netip.MustParsePrefix(fmt.Sprintf("198.18.0.%d/24", i+1))
		if h.Index != i || h.Underlay != want || h.Iface != "eth0" {
			t.Errorf("host %d: index %d, underlay %v on %s; want %d, %v on eth0", i, h.Index, h.Underlay, h.Iface, i, want)
		}
		out, err := h.NS.Exec(context.Background(), "cat", "/proc/sys/net/ipv4/ip_forward")
		if err != nil || strings.TrimSpace(string(out)) != "1" {
			t.Errorf("host %d: ip_forward = %q, %v; want 1", i, out, err)
		}
	}
	for _, from := range c.Hosts {
		mustPing(t, from.NS, c.SwitchAddr, 84)
		for _, to := range c.Hosts {
			if to != from {
				mustPing(t, from.NS, to.Underlay.Addr(), 1500)
			}
		}
	}

	// The switch ports live in the switch, not in the test's namespace.
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range ifaces {
		if ifc.Name == "sw0" || ifc.Name == "h1" || ifc.Name == "h2" || ifc.Name == "h3" {
			t.Errorf("interface %s appeared in the caller's namespace", ifc.Name)
		}
	}
}

func TestUnderlayMTU(t *testing.T) {
	t.Parallel()
	c := newCluster(t, topo.Options{Hosts: 2, UnderlayMTU: 9000})
	from, to := c.Hosts[0].NS, c.Hosts[1].Underlay.Addr()
	mustPing(t, from, to, 9000)
	r, err := traffic.Ping(context.Background(), from, to, 9001, true, answerWithin)
	if err != nil || !r.LocalTooBig || r.LocalMTU != 9000 {
		t.Errorf("DF 9001 over MTU 9000: got %v, %v; want local too big, MTU 9000", r, err)
	}
	// The switch side must carry jumbo frames too: ping the other way.
	mustPing(t, c.Hosts[1].NS, c.Hosts[0].Underlay.Addr(), 9000)
}

func TestContainers(t *testing.T) {
	t.Parallel()
	c := newCluster(t, topo.Options{Hosts: 2})
	h := c.Hosts[0]
	gw := netip.MustParsePrefix("100.96.1.1/24")

	if _, err := h.AddContainer(1472); err == nil {
		t.Error("AddContainer before AddBridge succeeded")
	}
	if err := h.AddBridge("docker0", netip.MustParsePrefix("10.1.0.1/24"), 1472); err == nil {
		t.Error("AddBridge outside 100.96.0.0/16 succeeded")
	}
	if err := h.AddBridge("docker0", gw, 1472); err != nil {
		t.Fatal(err)
	}
	if err := h.AddBridge("docker1", netip.MustParsePrefix("100.96.2.1/24"), 1472); err == nil {
		t.Error("a second AddBridge succeeded")
	}

	var cs []*topo.Container
	for i := range 2 {
		ct, err := h.AddContainer(1472)
		if err != nil {
			t.Fatal(err)
		}
		want := netip.MustParsePrefix(fmt.Sprintf("100.96.1.%d/24", i+2))
		if ct.Addr != want || ct.Host != h {
			t.Errorf("container %d: %v on %p, want %v on %p", i, ct.Addr, ct.Host, want, h)
		}
		cs = append(cs, ct)
	}
	if len(h.Containers) != 2 || h.Bridge != "docker0" {
		t.Errorf("host has %d containers on %q", len(h.Containers), h.Bridge)
	}

	mustPing(t, cs[0].NS, gw.Addr(), 1472)
	mustPing(t, cs[0].NS, cs[1].Addr.Addr(), 1472) // across the bridge
	mustPing(t, cs[1].NS, h.Underlay.Addr(), 84)   // the host, by its default route
	mustPing(t, h.NS, cs[1].Addr.Addr(), 1472)     // and back from the host
	r, err := traffic.Ping(context.Background(), cs[0].NS, gw.Addr(), 1473, true, answerWithin)
	if err != nil || !r.LocalTooBig || r.LocalMTU != 1472 {
		t.Errorf("DF 1473 from a 1472 container: got %v, %v; want local too big, MTU 1472", r, err)
	}

	// The bridge keeps the MTU it was given, whatever its ports have.
	ct, err := h.AddContainer(1400)
	if err != nil {
		t.Fatal(err)
	}
	out, err := h.NS.Exec(context.Background(), "ip", "-o", "link", "show", "docker0")
	if err != nil || !strings.Contains(string(out), " mtu 1472 ") {
		t.Errorf("docker0 after adding an MTU 1400 port: %s %v; want mtu 1472", out, err)
	}
	mustPing(t, ct.NS, gw.Addr(), 1400)
}

// TestNewCleansUpOnFailure makes New fail halfway, by taking the name of
// its second host, and checks it deletes what it had made.
func TestNewCleansUpOnFailure(t *testing.T) {
	if err := netns.Available(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	t.Parallel()
	prefix := netns.Prefix("topo-fail")
	squatter, err := netns.New(prefix + "-h2")
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Delete()

	if c, err := topo.New(context.Background(), topo.Options{Prefix: prefix, Hosts: 3}); err == nil {
		c.Close()
		t.Fatal("New succeeded although a host's name was taken")
	}
	names, err := netns.List(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != squatter.Name {
		t.Errorf("after a failed New: %v, want only %s", names, squatter.Name)
	}
}

func TestCloseTwice(t *testing.T) {
	t.Parallel()
	c := newCluster(t, topo.Options{Hosts: 2})
	if _, err := c.Hosts[1].AddContainer(1500); err == nil {
		t.Error("AddContainer without a bridge succeeded")
	}
	if err := c.Hosts[1].AddBridge("cni0", netip.MustParsePrefix("100.96.2.1/24"), 1450); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Hosts[1].AddContainer(1450); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if names, _ := netns.List(c.Prefix); len(names) > 0 {
		t.Errorf("after Close: %v", names)
	}
}
