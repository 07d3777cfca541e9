package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlayd/overlayd/perf/cluster"
)

const hostGWNetworkConfig = `{"Network":"100.96.0.0/16","SubnetLen":24,"Backend":{"Type":"host-gw"}}`

// TestHostGWOverlay runs the host-gw backend on three hosts of one L2
// segment: overlayd only routes, the kernel forwards.
func TestHostGWOverlay(t *testing.T) {
	c := startCluster(t, 3, cluster.Options{NetworkConfig: hostGWNetworkConfig})
	waitFullMesh(t, c)
	for _, d := range c.Daemons {
		checkHostGWRoutes(t, c, d)
		if l := leaseOf(t, c, d); l.Attrs.BackendType != "host-gw" || l.Attrs.BackendData != nil {
			t.Errorf("%s: lease BackendType %q BackendData %s; want host-gw and none, as flanneld", d.Name(), l.Attrs.BackendType, l.Attrs.BackendData)
		}
	}

	t.Run("AllPairsPing", func(t *testing.T) { pingAllPairs(t, c) })
	t.Run("Transfer64MiB", func(t *testing.T) { transfer(t, c.Daemons[0], c.Daemons[2], 5201, transferBytes) })
	t.Run("MTU", func(t *testing.T) {
		if mtu := c.Daemons[0].Env.MTU; mtu != underlayMTU {
			t.Errorf("FLANNEL_MTU=%d, want the underlay's %d: host-gw adds no header", mtu, underlayMTU)
		}
	})
	t.Run("PeerNotOnTheSameL2Segment", func(t *testing.T) { checkPeerBehindRouter(t, c) })
	t.Run("ForwardsWhileStopped", func(t *testing.T) { forwardsWhileStopped(t, c, c.Daemons[1]) })
	t.Run("RestartKeepsSubnet", func(t *testing.T) {
		restartKeepsLease(t, c, c.Daemons[1])
		checkHostGWRoutes(t, c, c.Daemons[0])
	})
	t.Run("LeaveAndJoin", func(t *testing.T) {
		leaveAndJoin(t, c, c.Daemons[2])
		for _, d := range c.Daemons {
			checkHostGWRoutes(t, c, d)
		}
	})
}

// checkHostGWRoutes: d has one route per other host, as flanneld's host-gw
// makes it, and none for hosts that are not running.
func checkHostGWRoutes(t *testing.T, c *cluster.Cluster, d *cluster.Daemon) {
	t.Helper()
	out, err := d.Host.NS.Exec(context.Background(), "ip", "route")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range c.Daemons {
		if o == d {
			continue
		}
		route := fmt.Sprintf("%s via %s dev %s", o.Env.Subnet.Masked(), o.Host.Underlay.Addr(), d.Host.Iface)
		if has := strings.Contains(string(out), route); has != (o.Proc != nil) {
			t.Errorf("%s: route %q present=%v, want %v:\n%s", d.Name(), route, has, o.Proc != nil, out)
		}
	}
}

// checkPeerBehindRouter registers a host-gw host that host1 reaches only
// through a router and the others not at all: no host may route to it,
// each says why, and the others' traffic is unaffected.
func checkPeerBehindRouter(t *testing.T, c *cluster.Cluster) {
	ctx := context.Background()
	h1 := c.Daemons[0]
	// 198.19.0.0/24 lies behind the switch, for host1 only.
	execIn(t, h1.Host.NS, "ip", "route", "add", "198.19.0.0/24", "via", c.Topo.SwitchAddr.String())
	defer execIn(t, h1.Host.NS, "ip", "route", "del", "198.19.0.0/24")

	far := netip.MustParsePrefix("100.96.250.0/24")
	putLease(t, c, far, `{"PublicIP":"198.19.0.9","PublicIPv6":null,"BackendType":"host-gw"}`)
	defer func() {
		reg, err := c.Registry()
		if err != nil {
			t.Fatal(err)
		}
		defer reg.Close()
		if err := reg.DeleteLease(ctx, far, netip.Addr{}); err != nil {
			t.Error(err)
		}
	}()

	for _, d := range c.Daemons {
		why := "no route to 198.19.0.9"
		if d == h1 {
			why = "via router " + c.Topo.SwitchAddr.String()
		}
		waitLog(t, d.Proc, filepath.Join(d.Dir, "overlayd.log"), "not on the same L2 segment", why)
		out, err := d.Host.NS.Exec(ctx, "ip", "route", "show", far.String())
		if err != nil || len(strings.TrimSpace(string(out))) != 0 {
			t.Errorf("%s routes %s: %q %v", d.Name(), far, out, err)
		}
	}
	// The table lists the hosts it routes to, not the one it cannot.
	waitFullMesh(t, c)
	pingAllPairs(t, c)
}
