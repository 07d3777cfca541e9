package traffic

import (
	"context"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/overlayd/overlayd/perf/netns"
)

// lab makes the namespaces of one test and removes them, and checks that
// none is left, when the test ends.
type lab struct {
	t      *testing.T
	prefix string
}

func newLab(t *testing.T) *lab {
	t.Helper()
	if err := netns.Available(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	l := &lab{t: t, prefix: netns.Prefix("traffic")}
	t.Cleanup(func() {
		if names, err := netns.List(l.prefix); err != nil || len(names) > 0 {
			t.Errorf("namespaces left behind: %v %v", names, err)
		}
	})
	return l
}

func (l *lab) ns(name string) *netns.NS {
	l.t.Helper()
	n, err := netns.New(l.prefix + "-" + name)
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() {
		if err := n.Delete(); err != nil {
			l.t.Error(err)
		}
	})
	l.ip(n, "link", "set", "lo", "up")
	return n
}

func (l *lab) ip(n *netns.NS, args ...string) {
	l.t.Helper()
	if err := n.IP(context.Background(), args...); err != nil {
		l.t.Fatal(err)
	}
}

// link joins a and b with a veth pair of the given MTU, named aIf in a and
// bIf in b, and addresses both ends.
func (l *lab) link(a *netns.NS, aIf string, aAddr string, b *netns.NS, bIf string, bAddr string, mtu int) {
	l.t.Helper()
	m := strconv.Itoa(mtu)
	l.ip(a, "link", "add", aIf, "mtu", m, "type", "veth", "peer", "name", bIf, "mtu", m, "netns", b.Name)
	l.ip(a, "addr", "add", aAddr, "dev", aIf)
	l.ip(b, "addr", "add", bAddr, "dev", bIf)
	l.ip(a, "link", "set", aIf, "up")
	l.ip(b, "link", "set", bIf, "up")
	l.waitUp(a, aIf)
	l.waitUp(b, bIf)
}

// waitUp waits until iface in n is operationally up. The kernel gives an
// interface its qdisc only then, from its link-watch work, which a busy
// machine may run late; until then it drops what is sent (a test's first
// pings got no answer under `make test`).
func (l *lab) waitUp(n *netns.NS, iface string) {
	l.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var state netlink.LinkOperState
		err := n.Do(func() error {
			link, err := netlink.LinkByName(iface)
			if err == nil {
				state = link.Attrs().OperState
			}
			return err
		})
		if err != nil {
			l.t.Fatal(err)
		}
		if state == netlink.OperUp {
			return
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("%s in %s still %v after 30 s", iface, n.Name, state)
		}
		time.Sleep(time.Millisecond)
	}
}

// pair is two namespaces on one 198.18.1.0/24 link of the given MTU.
func (l *lab) pair(mtu int) (a, b *netns.NS, bAddr netip.Addr) {
	a, b = l.ns("a"), l.ns("b")
	l.link(a, "eth0", "198.18.1.1/24", b, "eth0", "198.18.1.2/24", mtu)
	return a, b, netip.MustParseAddr("198.18.1.2")
}

// routed is a → r → b: a on 198.18.1.0/24 (MTU 1500), b on 198.18.2.0/24
// behind a link of MTU nextMTU, and r forwarding between them. r answers
// for 198.18.3.0/24 with "host unreachable".
func (l *lab) routed(nextMTU int) (a, r, b *netns.NS) {
	a, r, b = l.ns("a"), l.ns("r"), l.ns("b")
	l.link(a, "eth0", "198.18.1.1/24", r, "eth0", "198.18.1.254/24", 1500)
	l.link(r, "eth1", "198.18.2.254/24", b, "eth0", "198.18.2.1/24", nextMTU)
	l.ip(a, "route", "add", "default", "via", "198.18.1.254")
	l.ip(b, "route", "add", "default", "via", "198.18.2.254")
	l.ip(r, "route", "add", "unreachable", "198.18.3.0/24")
	if err := r.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		l.t.Fatal(err)
	}
	return a, r, b
}
