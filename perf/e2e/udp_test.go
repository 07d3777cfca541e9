package e2e

import (
	"context"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/overlayd/overlayd/perf/cluster"
	"github.com/overlayd/overlayd/perf/traffic"
	"github.com/overlayd/overlayd/tunnel"
)

const (
	transferBytes = 64 << 20
	underlayMTU   = 1500 // topo's default
)

// TestUDPOverlay runs the udp backend on three hosts with the embedded etcd
// and walks through what a cluster lives through: traffic, MTU limits, bad
// datagrams, a restart, a host leaving and joining.
func TestUDPOverlay(t *testing.T) {
	c := startCluster(t, 3, cluster.Options{})
	ctx := context.Background()
	waitFullMesh(t, c)

	t.Run("AllPairsPing", func(t *testing.T) { pingAllPairs(t, c) })

	t.Run("Transfer64MiB", func(t *testing.T) {
		src, dst := c.Daemons[0], c.Daemons[2]
		res, err := traffic.Transfer(ctx, src.Container.NS, dst.Container.NS, dst.Container.Addr.Addr(), 5201, transferBytes)
		if err != nil {
			t.Fatal(err)
		}
		if res.Bytes != transferBytes || !res.Identical {
			t.Fatalf("transfer: %d of %d bytes, identical=%v (sent %x, received %x)", res.Bytes, transferBytes, res.Identical, res.SentSHA[:8], res.RecvSHA[:8])
		}
		t.Logf("64 MiB in %s", res.Duration)
	})

	t.Run("PathMTU", func(t *testing.T) { checkPathMTU(t, c) })

	t.Run("BadDatagramsDropped", func(t *testing.T) { checkBadDatagrams(t, c) })

	t.Run("RestartKeepsSubnet", func(t *testing.T) { restartKeepsLease(t, c, c.Daemons[1]) })
	t.Run("LeaveAndJoin", func(t *testing.T) { leaveAndJoin(t, c, c.Daemons[2]) })
}

// TestDebianEtcd runs the overlay against Debian's etcd server instead of
// the embedded one: production uses an existing etcd through the same code.
func TestDebianEtcd(t *testing.T) {
	requireRoot(t)
	const bin = "/usr/bin/etcd"
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("Debian's etcd-server is not installed (%v); .ci/run installs it with apt-get", err)
	}
	c := startCluster(t, 2, cluster.Options{EtcdBinary: bin})
	waitFullMesh(t, c)
	pingAllPairs(t, c)
	src, dst := c.Daemons[1], c.Daemons[0]
	res, err := traffic.Transfer(context.Background(), src.Container.NS, dst.Container.NS, dst.Container.Addr.Addr(), 5202, 8<<20)
	if err != nil || !res.Identical {
		t.Fatalf("transfer over Debian etcd cluster: %+v, %v", res, err)
	}
}

func waitFullMesh(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	for _, d := range c.Daemons {
		if err := d.WaitPeers(context.Background(), 10*time.Second, d.OtherSubnets()); err != nil {
			t.Fatalf("%s: %v", d.Name(), err)
		}
	}
}

func pingAllPairs(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	ctx := context.Background()
	for _, a := range c.Daemons {
		for _, b := range c.Daemons {
			if a == b {
				continue
			}
			dst := b.Container.Addr.Addr()
			// The first packet of a pair may wait for ARP on the bridge: allow retries.
			var last traffic.PingResult
			var err error
			for try := 0; try < 3; try++ {
				if last, err = traffic.Ping(ctx, a.Container.NS, dst, 84, false, 2*time.Second); err == nil && last.Reply {
					break
				}
			}
			if err != nil || !last.Reply {
				t.Errorf("container on %s cannot reach %s on %s: %+v %v", a.Name(), dst, b.Name(), last, err)
			}
		}
	}
}

// checkPathMTU: a DF ping of exactly the overlay MTU passes; one byte more
// is refused (EMSGSIZE at the source, or ICMP fragmentation needed).
func checkPathMTU(t *testing.T, c *cluster.Cluster) {
	ctx := context.Background()
	src, dst := c.Daemons[0], c.Daemons[1]
	mtu := src.Env.MTU
	if mtu != underlayMTU-28 {
		t.Errorf("FLANNEL_MTU=%d, want the underlay MTU %d - 28", mtu, underlayMTU)
	}
	res, err := traffic.Ping(ctx, src.Container.NS, dst.Container.Addr.Addr(), mtu, true, 2*time.Second)
	if err != nil || !res.Reply {
		t.Fatalf("DF ping of exactly %d bytes: %+v %v", mtu, res, err)
	}
	res, err = traffic.Ping(ctx, src.Container.NS, dst.Container.Addr.Addr(), mtu+1, true, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !(res.FragNeeded && res.NextHopMTU == mtu) && !(res.LocalTooBig) {
		t.Fatalf("DF ping of %d bytes: want fragmentation needed (mtu %d) or EMSGSIZE, got %+v", mtu+1, mtu, res)
	}

	// A container whose MTU was left at 1500 (docker without --mtu) learns
	// the overlay MTU from an ICMP error instead.
	big, err := src.Host.AddContainer(1500)
	if err != nil {
		t.Fatal(err)
	}
	res, err = traffic.Ping(ctx, big.NS, dst.Container.Addr.Addr(), mtu+1, true, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !res.FragNeeded || res.NextHopMTU != mtu {
		t.Fatalf("DF ping of %d bytes from a 1500-MTU container: want ICMP fragmentation needed with MTU %d, got %+v", mtu+1, mtu, res)
	}
}

// checkBadDatagrams sends host1 datagrams that must be dropped and counted:
// from an address that is no peer, spoofing another subnet, and malformed.
// None may reach the TUN and the daemon must survive them all.
func checkBadDatagrams(t *testing.T, c *cluster.Cluster) {
	ctx := context.Background()
	victim, peer := c.Daemons[0], c.Daemons[1]
	before, err := victim.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.AddrPortFrom(victim.Host.Underlay.Addr(), 8285)
	inner := func(src, dst netip.Addr) []byte { return udpPacket(t, src, dst, []byte("overlayd test")) }
	victimAddr := victim.Container.Addr.Addr()

	// From the switch: not a registered peer.
	send(t, c.Topo.Switch, dst, inner(peer.Container.Addr.Addr(), victimAddr))
	// From a real peer, but claiming a source outside its subnet.
	send(t, peer.Host.NS, dst, inner(netip.MustParseAddr("100.96.250.9"), victimAddr))
	// From a real peer, malformed: a truncated header, lengths that disagree, garbage.
	good := inner(peer.Container.Addr.Addr(), victimAddr)
	send(t, peer.Host.NS, dst, good[:15])
	send(t, peer.Host.NS, dst, append(append([]byte{}, good...), 0, 0, 0))
	send(t, peer.Host.NS, dst, []byte(strings.Repeat("\xff", 40)))

	expectDrops(t, victim, before, map[string]uint64{"unknown_peer": 1, "spoofed": 1, "malformed": 3})
	// Still forwarding.
	pingAllPairs(t, c)
}

// expectDrops waits until the victim's drop counters have gone up by want
// since before, and fails if any went up by another amount or the daemon
// stopped answering.
func expectDrops(t *testing.T, victim *cluster.Daemon, before tunnel.Status, want map[string]uint64) {
	t.Helper()
	var after map[string]uint64
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := victim.Status(context.Background())
		if err != nil {
			t.Fatalf("overlayd did not survive bad datagrams: %v", err)
		}
		after = s.Stats.Drops
		ok := true
		for r, n := range want {
			ok = ok && after[r]-before.Stats.Drops[r] >= n
		}
		if ok || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for r, n := range want {
		if got := after[r] - before.Stats.Drops[r]; got != n {
			t.Errorf("drops[%s] went up by %d, want %d", r, got, n)
		}
	}
}
