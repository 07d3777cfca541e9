package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/overlayd/overlayd/perf/cluster"
	"github.com/overlayd/overlayd/perf/traffic"
	"github.com/overlayd/overlayd/subnet"
	"github.com/overlayd/overlayd/tunnel"
)

// vxlanNetworkConfig leaves VNI and Port out: flannel's defaults, 1 and 8472.
const vxlanNetworkConfig = `{"Network":"100.96.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan"}}`

const (
	vxlanPort = 8472
	vxlanMTU  = underlayMTU - 50
)

var kernelDataplane = []string{"--vxlan-dataplane", "kernel"}

// TestVXLANOverlay runs the vxlan backend with overlayd's userspace data
// plane on three hosts, through what the udp test walks through.
func TestVXLANOverlay(t *testing.T) {
	c := startCluster(t, 3, cluster.Options{NetworkConfig: vxlanNetworkConfig})
	waitFullMesh(t, c)
	checkVXLANLeases(t, c, true)

	t.Run("AllPairsPing", func(t *testing.T) { pingAllPairs(t, c) })
	t.Run("Transfer64MiB", func(t *testing.T) { transfer(t, c.Daemons[0], c.Daemons[2], 5201, transferBytes) })
	t.Run("PathMTU", func(t *testing.T) { checkOverlayMTU(t, c, vxlanMTU) })
	t.Run("BadFramesDropped", func(t *testing.T) { checkBadVXLANFrames(t, c) })
	t.Run("RestartKeepsSubnetAndVtepMAC", func(t *testing.T) { restartKeepsLease(t, c, c.Daemons[1]) })
	t.Run("LeaveAndJoin", func(t *testing.T) { leaveAndJoin(t, c, c.Daemons[2]) })
}

// TestKernelVXLANOverlay runs the vxlan backend with the kernel's data
// plane, flannel.1 programmed by overlayd as flanneld would program it.
func TestKernelVXLANOverlay(t *testing.T) {
	c := startCluster(t, 3, cluster.Options{NetworkConfig: vxlanNetworkConfig, DaemonArgs: kernelDataplane})
	waitFullMesh(t, c)
	checkVXLANLeases(t, c, false)
	checkFlannelDevice(t, c, c.Daemons[0])

	t.Run("AllPairsPing", func(t *testing.T) { pingAllPairs(t, c) })
	t.Run("Transfer64MiB", func(t *testing.T) { transfer(t, c.Daemons[0], c.Daemons[2], 5201, transferBytes) })
	t.Run("PathMTU", func(t *testing.T) { checkOverlayMTU(t, c, vxlanMTU) })
	t.Run("ForwardsWhileStopped", func(t *testing.T) { forwardsWhileStopped(t, c, c.Daemons[1]) })
	t.Run("RestartKeepsSubnetAndVtepMAC", func(t *testing.T) {
		restartKeepsLease(t, c, c.Daemons[1])
		checkFlannelDevice(t, c, c.Daemons[1])
	})
	t.Run("LeaveAndJoin", func(t *testing.T) {
		leaveAndJoin(t, c, c.Daemons[2])
		checkFlannelDevice(t, c, c.Daemons[0])
	})
}

// TestMixedVXLANCluster switches one host of a userspace vxlan cluster to
// the kernel data plane and back: the lease, VtepMAC and wire format are
// the same, so the others notice nothing, but that the kernel's VTEP
// checks inner checksums: its lease no longer says it takes them partial,
// and the others complete them for it.
func TestMixedVXLANCluster(t *testing.T) {
	c := startCluster(t, 3, cluster.Options{NetworkConfig: vxlanNetworkConfig})
	waitFullMesh(t, c)
	ctx := context.Background()
	kern := c.Daemons[1]
	before := leaseOf(t, c, kern)

	finishChecksums(t, kern.Host)
	restart(t, kern, kernelDataplane...)
	after := leaseOf(t, c, kern)
	want := strings.Replace(string(before.Attrs.BackendData), `,"PartialChecksums":true`, "", 1)
	if after.Subnet != before.Subnet || string(after.Attrs.BackendData) != want || want == string(before.Attrs.BackendData) {
		t.Fatalf("switching to the kernel data plane changed the lease from %s %s to %s %s, want %s",
			before.Subnet, before.Attrs.BackendData, after.Subnet, after.Attrs.BackendData, want)
	}
	if s, err := kern.Status(ctx); err != nil || s.TUN != "flannel.1" {
		t.Fatalf("%s status: device %q, %v; want flannel.1", kern.Name(), s.TUN, err)
	}
	waitFullMesh(t, c)
	waitPeerChecksums(t, c, kern)
	checkFlannelDevice(t, c, kern)
	pingAllPairs(t, c)
	transfer(t, c.Daemons[0], kern, 5203, transferBytes) // userspace -> kernel
	transfer(t, kern, c.Daemons[2], 5204, transferBytes) // kernel -> userspace

	// And back: the userspace data plane deletes flannel.1, which would
	// hold its port and take its traffic.
	restart(t, kern)
	if out, err := kern.Host.NS.Exec(ctx, "ip", "link", "show", "flannel.1"); err == nil {
		t.Errorf("flannel.1 left behind by the switch back to userspace:\n%s", out)
	}
	if back := leaseOf(t, c, kern); string(back.Attrs.BackendData) != string(before.Attrs.BackendData) {
		t.Errorf("back on the userspace data plane, BackendData %s, had %s", back.Attrs.BackendData, before.Attrs.BackendData)
	}
	waitFullMesh(t, c)
	waitPeerChecksums(t, c, nil)
	pingAllPairs(t, c)
	transfer(t, kern, c.Daemons[0], 5205, 8<<20)
}

// transfer sends n bytes over TCP from a's container to b's and checks they
// arrive intact.
func transfer(t *testing.T, a, b *cluster.Daemon, port int, n int64) {
	t.Helper()
	res, err := traffic.Transfer(context.Background(), a.Container.NS, b.Container.NS, b.Container.Addr.Addr(), port, n)
	if err != nil {
		t.Fatalf("transfer %s -> %s: %v", a.Name(), b.Name(), err)
	}
	if res.Bytes != n || !res.Identical {
		t.Fatalf("transfer %s -> %s: %d of %d bytes, identical=%v (sent %x, received %x)",
			a.Name(), b.Name(), res.Bytes, n, res.Identical, res.SentSHA[:8], res.RecvSHA[:8])
	}
	t.Logf("%s -> %s: %d MiB identical in %s (%.2f Gbit/s)", a.Name(), b.Name(), n>>20, res.Duration.Round(time.Millisecond), res.Gbps())
}

// leaseOf reads d's lease from etcd.
func leaseOf(t *testing.T, c *cluster.Cluster, d *cluster.Daemon) subnet.Lease {
	t.Helper()
	reg, err := c.Registry()
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	leases, _, err := reg.ListLeases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		if l.Attrs.PublicIP == d.Host.Underlay.Addr() {
			return l
		}
	}
	t.Fatalf("no lease for %s (%s)", d.Name(), d.Host.Underlay.Addr())
	return subnet.Lease{}
}

// checkVXLANLeases: every lease is written as flanneld writes a vxlan lease,
// with the VtepMAC derived from the host's public IP; with partial, it
// says behind them that the host takes partial checksums.
func checkVXLANLeases(t *testing.T, c *cluster.Cluster, partial bool) {
	t.Helper()
	for _, d := range c.Daemons {
		l := leaseOf(t, c, d)
		mac := tunnel.VtepMAC(d.Host.Underlay.Addr(), 1)
		want := fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, net.HardwareAddr(mac[:]))
		if partial {
			want = strings.TrimSuffix(want, "}") + `,"PartialChecksums":true}`
		}
		if l.Attrs.BackendType != "vxlan" || string(l.Attrs.BackendData) != want || l.Subnet != d.Env.Subnet.Masked() {
			t.Errorf("%s: lease %s BackendType %q BackendData %s; want %s vxlan %s",
				d.Name(), l.Subnet, l.Attrs.BackendType, l.Attrs.BackendData, d.Env.Subnet.Masked(), want)
		}
	}
}

// checkFlannelDevice compares d's flannel.1 with FLANNEL.md §6: the device,
// and one route, neighbour and fdb entry per other host.
func checkFlannelDevice(t *testing.T, c *cluster.Cluster, d *cluster.Daemon) {
	t.Helper()
	self := tunnel.VtepMAC(d.Host.Underlay.Addr(), 1)
	want := map[string][]string{
		"ip -d link show flannel.1": {
			fmt.Sprintf("mtu %d", vxlanMTU),
			"link/ether " + net.HardwareAddr(self[:]).String(),
			fmt.Sprintf("vxlan id 1 local %s dev %s", d.Host.Underlay.Addr(), d.Host.Iface),
			fmt.Sprintf("dstport %d", vxlanPort), "nolearning",
		},
		"ip addr show flannel.1": {"inet " + d.Env.Subnet.Masked().Addr().String() + "/32"},
	}
	for _, o := range c.Daemons {
		if o == d || o.Proc == nil {
			continue
		}
		sn, mac := o.Env.Subnet.Masked(), tunnel.VtepMAC(o.Host.Underlay.Addr(), 1)
		want["ip route"] = append(want["ip route"], fmt.Sprintf("%s via %s dev flannel.1 onlink", sn, sn.Addr()))
		want["ip neigh show dev flannel.1"] = append(want["ip neigh show dev flannel.1"], fmt.Sprintf("%s lladdr %s PERMANENT", sn.Addr(), net.HardwareAddr(mac[:])))
		want["bridge fdb show dev flannel.1"] = append(want["bridge fdb show dev flannel.1"], fmt.Sprintf("%s dst %s self permanent", net.HardwareAddr(mac[:]), o.Host.Underlay.Addr()))
	}
	checkCommands(t, d, want)
}

// checkCommands runs each command in d's host namespace and looks for the
// lines it must print.
func checkCommands(t *testing.T, d *cluster.Daemon, want map[string][]string) {
	t.Helper()
	for command, parts := range want {
		args := strings.Fields(command)
		out, err := d.Host.NS.Exec(context.Background(), args[0], args[1:]...)
		if err != nil {
			t.Fatalf("%s: %s: %v", d.Name(), command, err)
		}
		for _, p := range parts {
			if !strings.Contains(string(out), p) {
				t.Errorf("%s: %s: no %q in:\n%s", d.Name(), command, p, out)
			}
		}
	}
}

// forwardsWhileStopped: with a kernel data plane, the kernel keeps
// forwarding while overlayd is down, as with flanneld.
func forwardsWhileStopped(t *testing.T, c *cluster.Cluster, d *cluster.Daemon) {
	t.Helper()
	ctx := context.Background()
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, o := range c.Daemons {
		if o == d {
			continue
		}
		for _, pair := range [][2]*cluster.Daemon{{d, o}, {o, d}} {
			res, err := traffic.Ping(ctx, pair[0].Container.NS, pair[1].Container.Addr.Addr(), 84, false, 2*time.Second)
			if err != nil || !res.Reply {
				t.Errorf("%s -> %s with overlayd stopped on %s: %+v %v", pair[0].Name(), pair[1].Name(), d.Name(), res, err)
			}
		}
	}
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	waitFullMesh(t, c)
}

// checkOverlayMTU: the subnet file's MTU is want; a DF ping of exactly want
// bytes passes and one byte more is refused; a container left at MTU 1500
// learns want from ICMP fragmentation needed.
func checkOverlayMTU(t *testing.T, c *cluster.Cluster, want int) {
	t.Helper()
	ctx := context.Background()
	src, dst := c.Daemons[0], c.Daemons[1]
	if src.Env.MTU != want {
		t.Errorf("FLANNEL_MTU=%d, want %d", src.Env.MTU, want)
	}
	res, err := traffic.Ping(ctx, src.Container.NS, dst.Container.Addr.Addr(), want, true, 2*time.Second)
	if err != nil || !res.Reply {
		t.Fatalf("DF ping of exactly %d bytes: %+v %v", want, res, err)
	}
	res, err = traffic.Ping(ctx, src.Container.NS, dst.Container.Addr.Addr(), want+1, true, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !(res.FragNeeded && res.NextHopMTU == want) && !res.LocalTooBig {
		t.Fatalf("DF ping of %d bytes: want fragmentation needed (mtu %d) or EMSGSIZE, got %+v", want+1, want, res)
	}
	big, err := src.Host.AddContainer(1500)
	if err != nil {
		t.Fatal(err)
	}
	res, err = traffic.Ping(ctx, big.NS, dst.Container.Addr.Addr(), want+1, true, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !res.FragNeeded || res.NextHopMTU != want {
		t.Fatalf("DF ping of %d bytes from a 1500-MTU container: want ICMP fragmentation needed with MTU %d, got %+v", want+1, want, res)
	}
}

// vxlanFrame builds a VXLAN datagram with gopacket, independently of encap.
func vxlanFrame(t *testing.T, vni uint32, src, dst [6]byte, inner []byte) []byte {
	t.Helper()
	vx := &layers.VXLAN{ValidIDFlag: true, VNI: vni}
	eth := &layers.Ethernet{SrcMAC: src[:], DstMAC: dst[:], EthernetType: layers.EthernetTypeIPv4}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{}, vx, eth, gopacket.Payload(inner)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// checkBadVXLANFrames sends host1 frames a kernel VTEP would drop, and
// frames overlayd's own checks drop: each is counted, none reaches the TUN.
func checkBadVXLANFrames(t *testing.T, c *cluster.Cluster) {
	ctx := context.Background()
	victim, peer := c.Daemons[0], c.Daemons[1]
	before, err := victim.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.AddrPortFrom(victim.Host.Underlay.Addr(), vxlanPort)
	ours, theirs := tunnel.VtepMAC(victim.Host.Underlay.Addr(), 1), tunnel.VtepMAC(peer.Host.Underlay.Addr(), 1)
	good := udpPacket(t, peer.Container.Addr.Addr(), victim.Container.Addr.Addr(), []byte("overlayd test"))
	spoofed := udpPacket(t, netip.MustParseAddr("100.96.250.9"), victim.Container.Addr.Addr(), []byte("overlayd test"))

	// From the switch: not a registered peer.
	send(t, c.Topo.Switch, dst, vxlanFrame(t, 1, theirs, ours, good))
	// From a real peer, claiming a source outside its subnet.
	send(t, peer.Host.NS, dst, vxlanFrame(t, 1, theirs, ours, spoofed))
	// From a real peer, what the kernel drops: another VNI, another
	// destination MAC, truncated, garbage.
	send(t, peer.Host.NS, dst, vxlanFrame(t, 2, theirs, ours, good))
	send(t, peer.Host.NS, dst, vxlanFrame(t, 1, theirs, theirs, good))
	send(t, peer.Host.NS, dst, vxlanFrame(t, 1, theirs, ours, good)[:30])
	send(t, peer.Host.NS, dst, []byte(strings.Repeat("\xff", 60)))

	expectDrops(t, victim, before, map[string]uint64{"unknown_peer": 1, "spoofed": 1, "malformed": 4})
	pingAllPairs(t, c)
}
