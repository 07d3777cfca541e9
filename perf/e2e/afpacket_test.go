package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/overlayd/overlayd/perf/cluster"
	"github.com/overlayd/overlayd/perf/netns"
	"github.com/overlayd/overlayd/perf/traffic"
)

// The AF_PACKET underlay (--underlay=afpacket) on emulated hosts: the same
// wire as the socket underlay, so clusters mixing the two work, and the
// kernel of a host on AF_PACKET never answers the tunnel's datagrams (it
// has no socket on the port) with an ICMP port unreachable.

var afpacketArgs = []string{"--underlay", "afpacket"}

// afpVXLANConfig is flannel's vxlan backend with its defaults (VNI 1, port
// 8472).
const afpVXLANConfig = `{"Network":"100.96.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan"}}`

func TestAFPacketUDPOverlay(t *testing.T) {
	c := startCluster(t, 3, cluster.Options{DaemonArgs: afpacketArgs})
	checkAFPacketCluster(t, c, c.Daemons)
	// Malformed and foreign datagrams are dropped and counted as with a
	// socket, and the kernel stays quiet about them too.
	t.Run("BadDatagramsDropped", func(t *testing.T) {
		icmp := icmpUnreachables(t, c.Daemons)
		checkBadDatagrams(t, c)
		checkNoUnreachables(t, c.Daemons, icmp)
	})
}

func TestAFPacketVXLANOverlay(t *testing.T) {
	c := startCluster(t, 3, cluster.Options{NetworkConfig: afpVXLANConfig, DaemonArgs: afpacketArgs})
	checkAFPacketCluster(t, c, c.Daemons)
}

// TestAFPacketMixedPair runs one host on AF_PACKET and one on a UDP socket,
// with both backends.
func TestAFPacketMixedPair(t *testing.T) {
	for _, b := range []struct{ name, config string }{
		{"udp", cluster.DefaultNetworkConfig},
		{"vxlan", afpVXLANConfig},
	} {
		t.Run(b.name, func(t *testing.T) {
			c := startCluster(t, 2, cluster.Options{NetworkConfig: b.config})
			afp := c.Daemons[0]
			if err := afp.Stop(); err != nil {
				t.Fatal(err)
			}
			if err := afp.Start(context.Background(), afpacketArgs...); err != nil {
				t.Fatal(err)
			}
			if err := afp.WaitReady(context.Background()); err != nil {
				t.Fatal(err)
			}
			checkUnderlayLogged(t, c.Daemons[1], "underlay socket")
			checkAFPacketCluster(t, c, c.Daemons[:1])
		})
	}
}

// checkAFPacketCluster checks that the hosts in afp run the AF_PACKET
// underlay, then pings all pairs and moves 64 MiB between each ordered
// pair of hosts, and checks that no host on AF_PACKET sent a port
// unreachable meanwhile.
func checkAFPacketCluster(t *testing.T, c *cluster.Cluster, afp []*cluster.Daemon) {
	t.Helper()
	waitFullMesh(t, c)
	for _, d := range afp {
		checkUnderlayLogged(t, d, "underlay afpacket")
	}
	icmp := icmpUnreachables(t, afp)
	t.Run("AllPairsPing", func(t *testing.T) { pingAllPairs(t, c) })
	t.Run("Transfer64MiB", func(t *testing.T) {
		port := 5300
		for _, a := range c.Daemons {
			for _, b := range c.Daemons {
				if a == b {
					continue
				}
				port++
				afpTransfer(t, a, b, port, transferBytes)
			}
		}
	})
	t.Run("NoPortUnreachable", func(t *testing.T) { checkNoUnreachables(t, afp, icmp) })
	t.Run("CountersInStatus", func(t *testing.T) {
		for _, d := range afp {
			s, err := d.Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if s.Underlay["received"] == 0 || s.Underlay["sent"] == 0 {
				t.Errorf("%s: AF_PACKET counters missing from status after the transfers: %v", d.Name(), s.Underlay)
			}
		}
	})
}

// afpTransfer sends n bytes over TCP from a's container to b's and checks
// they arrive intact.
func afpTransfer(t *testing.T, a, b *cluster.Daemon, port int, n int64) {
	t.Helper()
	res, err := traffic.Transfer(context.Background(), a.Container.NS, b.Container.NS, b.Container.Addr.Addr(), port, n)
	if err != nil {
		t.Fatalf("transfer %s -> %s: %v", a.Name(), b.Name(), err)
	}
	if res.Bytes != n || !res.Identical {
		t.Fatalf("transfer %s -> %s: %d of %d bytes, identical=%v", a.Name(), b.Name(), res.Bytes, n, res.Identical)
	}
	t.Logf("%s -> %s: %d MiB identical in %s", a.Name(), b.Name(), n>>20, res.Duration.Round(time.Millisecond))
}

// checkUnderlayLogged makes sure d runs the underlay it was asked for.
func checkUnderlayLogged(t *testing.T, d *cluster.Daemon, want string) {
	t.Helper()
	log, err := os.ReadFile(filepath.Join(d.Dir, "overlayd.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), want) {
		t.Fatalf("%s: no %q in its log", d.Name(), want)
	}
}

// icmpUnreachables reads each host's count of ICMP destination
// unreachables its kernel sent (Icmp OutDestUnreachs).
func icmpUnreachables(t *testing.T, ds []*cluster.Daemon) map[*cluster.Daemon]uint64 {
	t.Helper()
	out := make(map[*cluster.Daemon]uint64, len(ds))
	for _, d := range ds {
		out[d] = outDestUnreachs(t, d.Host.NS)
	}
	return out
}

func checkNoUnreachables(t *testing.T, ds []*cluster.Daemon, before map[*cluster.Daemon]uint64) {
	t.Helper()
	for _, d := range ds {
		if n := outDestUnreachs(t, d.Host.NS); n != before[d] {
			t.Errorf("%s's kernel sent %d ICMP destination unreachables", d.Name(), n-before[d])
		}
	}
}

func outDestUnreachs(t *testing.T, ns *netns.NS) uint64 {
	t.Helper()
	return snmpCounter(t, ns, "Icmp:", "OutDestUnreachs")
}
