package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/overlayd/overlayd/perf/cluster"
	"github.com/overlayd/overlayd/perf/netns"
	"github.com/overlayd/overlayd/perf/topo"
	"github.com/overlayd/overlayd/subnet"
)

// kernelVtepMAC is the hand-made VTEP's MAC: flanneld picks a random one;
// this is the one of the capture in testdata/packets.
const kernelVtepMAC = "a6:d7:18:cf:e6:cb"

// TestKernelVTEPInterop puts overlayd's userspace VXLAN beside the Linux
// kernel's: host1 is set up by hand exactly as flanneld's vxlan backend
// sets a host up (FLANNEL.md §6: flannel.1, and a route, a permanent
// neighbour and an fdb entry for the peer; its lease written as flanneld
// writes it), host2 runs overlayd, on each underlay. Traffic must flow
// both ways, and TCP arrive byte for byte.
//
// The veths keep their TX offloads on, as containers on one machine (kind)
// have them: the kernel VTEP then sends its TCP super-frames whole, up to
// 64 KiB in one datagram, with inner checksums left partial, which
// overlayd cuts at its TUN's MTU.
func TestKernelVTEPInterop(t *testing.T) {
	for _, u := range []struct {
		name string
		args []string
	}{{"socket", nil}, {"afpacket", afpacketArgs}} {
		t.Run(u.name, func(t *testing.T) { kernelVTEPInterop(t, u.args) })
	}
}

func kernelVTEPInterop(t *testing.T, underlay []string) {
	c := startCluster(t, 2, cluster.Options{NetworkConfig: vxlanNetworkConfig, DaemonArgs: append([]string{"--release-on-exit"}, underlay...)})
	waitFullMesh(t, c)
	ctx := context.Background()
	kern, ovd := c.Daemons[0], c.Daemons[1]
	h := kern.Host
	sn := kern.Env.Subnet.Masked()

	// host1 leaves overlayd behind: its lease goes, its docker0 and
	// container stay, as when an operator swaps one daemon for the other.
	if err := kern.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := ovd.WaitPeers(ctx, 10*time.Second, nil); err != nil {
		t.Fatalf("%s still has host1 as a peer: %v", ovd.Name(), err)
	}

	// host1's VTEP and lease, as flanneld makes them.
	local := h.Underlay.Addr().String()
	execIn(t, h.NS, "ip", "link", "add", "flannel.1", "address", kernelVtepMAC, "type", "vxlan",
		"id", "1", "local", local, "dev", h.Iface, "dstport", "8472", "nolearning")
	execIn(t, h.NS, "ip", "link", "set", "flannel.1", "mtu", fmt.Sprint(vxlanMTU), "up")
	execIn(t, h.NS, "ip", "addr", "add", netip.PrefixFrom(sn.Addr(), 32).String(), "dev", "flannel.1")
	value := fmt.Sprintf(`{"PublicIP":%q,"PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":%q}}`, local, kernelVtepMAC)
	putLease(t, c, sn, value)

	// What flanneld programs for the overlayd host, from its lease.
	peer := leaseOf(t, c, ovd)
	var data struct {
		VNI     int
		VtepMAC string
	}
	if err := json.Unmarshal(peer.Attrs.BackendData, &data); err != nil || data.VNI != 1 {
		t.Fatalf("overlayd's lease %s: BackendData %s: %v", peer.Subnet, peer.Attrs.BackendData, err)
	}
	gw := peer.Subnet.Addr().String()
	execIn(t, h.NS, "ip", "neigh", "add", gw, "lladdr", data.VtepMAC, "dev", "flannel.1", "nud", "permanent")
	execIn(t, h.NS, "bridge", "fdb", "add", data.VtepMAC, "dev", "flannel.1", "dst", peer.Attrs.PublicIP.String(), "self", "permanent")
	execIn(t, h.NS, "ip", "route", "add", peer.Subnet.String(), "via", gw, "dev", "flannel.1", "onlink")

	if err := ovd.WaitPeers(ctx, 10*time.Second, []netip.Prefix{sn}); err != nil {
		t.Fatalf("%s did not take the flanneld-style lease as a peer: %v", ovd.Name(), err)
	}
	for _, cmd := range []string{"ip -d link show flannel.1", "ip route", "ip neigh show dev flannel.1", "bridge fdb show dev flannel.1"} {
		args := strings.Fields(cmd)
		out, _ := h.NS.Exec(ctx, args[0], args[1:]...)
		t.Logf("host1 (kernel VTEP) $ %s\n%s", cmd, out)
	}
	before, err := ovd.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fragFails := snmpCounter(t, ovd.Host.NS, "Ip:", "FragFails")
	// The kernel checks inner checksums: overlayd completes them for it.
	for _, p := range before.Peers {
		if p.PartialChecksums {
			t.Errorf("%s sends partial checksums to the kernel VTEP %s", ovd.Name(), p.Subnet)
		}
	}

	t.Run("PingBothWays", func(t *testing.T) { pingAllPairs(t, c) })
	t.Run("TransferToKernel", func(t *testing.T) { transfer(t, ovd, kern, 5211, interopBytes) })
	t.Run("TransferFromKernel", func(t *testing.T) {
		avg := rxAverage(t, ovd, func() { transfer(t, kern, ovd, 5212, interopBytes) })
		t.Logf("%s received packets of %d bytes on average (MTU %d)", ovd.Name(), avg, vxlanMTU)
		if avg <= vxlanMTU {
			t.Errorf("the kernel VTEP sent no super-frames: the test proves nothing (veth offloads off?)")
		}
	})
	t.Run("NothingDropped", func(t *testing.T) {
		after, err := ovd.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for r, n := range after.Stats.Drops {
			if d := n - before.Stats.Drops[r]; d != 0 {
				t.Errorf("overlayd dropped %d packets (%s) between it and the kernel", d, r)
			}
		}
		if after.Stats.RxPackets == before.Stats.RxPackets {
			t.Error("overlayd received nothing from the kernel VTEP")
		}
		for _, k := range []string{"malformed", "bad_checksum", "truncated"} { // AF_PACKET's own
			if d := after.Underlay[k] - before.Underlay[k]; d != 0 {
				t.Errorf("the underlay dropped %d datagrams from the kernel VTEP as %s", d, k)
			}
		}
		// What the kernel dropped for being too big to forward: the
		// super-frames, had overlayd written them into the TUN whole.
		if d := snmpCounter(t, ovd.Host.NS, "Ip:", "FragFails") - fragFails; d != 0 {
			t.Errorf("%s's kernel could not forward %d packets from the kernel VTEP (Ip FragFails)", ovd.Name(), d)
		}
		t.Logf("overlayd: %d packets from the kernel VTEP, %d to it, no drops",
			after.Stats.RxPackets-before.Stats.RxPackets, after.Stats.TxPackets-before.Stats.TxPackets)
	})
}

// rxAverage runs f and returns the average size of the packets overlayd d
// received from its peers meanwhile: larger than the MTU when a kernel
// VTEP's super-frames came whole.
func rxAverage(t *testing.T, d *cluster.Daemon, f func()) int {
	t.Helper()
	before, err := d.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f()
	after, err := d.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return int((after.Stats.RxBytes - before.Stats.RxBytes) / max(1, after.Stats.RxPackets-before.Stats.RxPackets))
}

// interopBytes is what the interop tests move each way.
const interopBytes = 16 << 20

// putLease writes a lease for sn whose JSON value is value, as another
// daemon would, for an hour.
func putLease(t *testing.T, c *cluster.Cluster, sn netip.Prefix, value string) {
	t.Helper()
	var attrs subnet.LeaseAttrs
	if err := json.Unmarshal([]byte(value), &attrs); err != nil {
		t.Fatalf("lease %s: %v", value, err)
	}
	if b, _ := json.Marshal(attrs); string(b) != value {
		t.Fatalf("lease written as %s, not %s", b, value)
	}
	reg, err := c.Registry()
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if _, err := reg.CreateLease(context.Background(), sn, attrs, time.Hour); err != nil {
		t.Fatalf("create lease %s: %v", sn, err)
	}
}

func execIn(t *testing.T, ns *netns.NS, name string, args ...string) {
	t.Helper()
	if _, err := ns.Exec(context.Background(), name, args...); err != nil {
		t.Fatal(err)
	}
}

// finishChecksums makes host h's underlay interface compute checksums in
// software before packets leave, as a physical NIC computes them on the
// wire (ethtool -K eth0 tx off).
//
// A veth otherwise hands packets to the next namespace with checksums still
// partial, which the kernel there trusts. A kernel VTEP encapsulates TCP
// segments whose checksums are partial, and only the outer checksum is then
// finished: overlayd, reading the VXLAN payload from a UDP socket, would get
// inner segments with unfinished checksums, which the receiving container
// drops. Real hosts never show this; hosts emulated on one machine do.
func finishChecksums(t *testing.T, h *topo.Host) {
	t.Helper()
	err := h.NS.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		value := struct{ cmd, data uint32 }{cmd: unix.ETHTOOL_STXCSUM, data: 0}
		var ifr struct { // struct ifreq with ifr_data
			name [unix.IFNAMSIZ]byte
			data unsafe.Pointer
			_    [24 - unsafe.Sizeof(uintptr(0))]byte
		}
		copy(ifr.name[:], h.Iface)
		ifr.data = unsafe.Pointer(&value)
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
			return fmt.Errorf("ETHTOOL_STXCSUM off: %w", errno)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %s: %v", h.NS.Name, h.Iface, err)
	}
}
