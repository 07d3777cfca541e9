package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/overlayd/overlayd/perf/netns/netnstest"
	"github.com/overlayd/overlayd/subnet"
)

// privateNetns gives the test a new network namespace (netnstest.New),
// reached only through the returned handle: the test's own goroutines never
// enter it. It skips the test without root. The handle is closed, and the
// namespace with every device in it deleted, when the test ends.
func privateNetns(t *testing.T) *netlink.Handle {
	t.Helper()
	ns := netnstest.New(t, "tunnel")
	var nl *netlink.Handle
	err := ns.Do(func() (err error) {
		nl, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", ns.Name, err)
	}
	t.Cleanup(nl.Close)
	return nl
}

// addExtIface makes eth0 (one end of a veth pair) with 198.18.0.1/24, up,
// and a router 198.18.0.254 towards 198.19.0.0/24.
func addExtIface(t *testing.T, nl *netlink.Handle) ExtIface {
	t.Helper()
	eth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: "wire0"}
	if err := nl.LinkAdd(eth); err != nil {
		t.Fatal(err)
	}
	link, err := nl.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	wire, err := nl.LinkByName("wire0")
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetUp(wire); err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParsePrefix("198.18.0.1/24")
	if err := nl.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	routed := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: prefixToIPNet(netip.MustParsePrefix("198.19.0.0/24")), Gw: net.ParseIP("198.18.0.254")}
	if err := nl.RouteAdd(routed); err != nil {
		t.Fatal(err)
	}
	return ExtIface{Name: "eth0", Index: link.Attrs().Index, Addr: addr.Addr(), MTU: 1500}
}

var (
	testNetwork = netip.MustParsePrefix("100.96.0.0/16")
	testLease   = subnet.Lease{Subnet: netip.MustParsePrefix("100.96.1.0/24")}
)

func testKernelVXLAN(t *testing.T, nl *netlink.Handle, u ExtIface, port int) *kernelVXLAN {
	t.Helper()
	vb, err := newVXLANBackend(subnet.BackendConfig{Type: "vxlan", Port: port, VNI: 1}, u.Addr)
	if err != nil {
		t.Fatal(err)
	}
	k, err := newKernelVXLAN(vb, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	k.nl = nl
	return k
}

// kernelPeer is the peer overlayd makes of host n's vxlan lease:
// 100.96.n.0/24 at 198.18.0.n.
func kernelPeer(t *testing.T, n int, mac [6]byte) subnet.Peer {
	t.Helper()
	vb, err := newVXLANBackend(vxlanConfig(t, 1), netip.MustParseAddr("198.18.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := vb.Peer(vxlanPeerLease(fmt.Sprintf("100.96.%d.0/24", n), fmt.Sprintf("198.18.0.%d", n), mac))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func macOf(n int) [6]byte { return VtepMAC(netip.AddrFrom4([4]byte{198, 18, 0, byte(n)}), 1) }

// vxlanEntries lists what is programmed on the device, in iproute2's words.
func vxlanEntries(t *testing.T, nl *netlink.Handle, name string) []string {
	t.Helper()
	link, err := nl.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	index := link.Attrs().Index
	var out []string
	routes, err := nl.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Gw != nil {
			onlink := ""
			if r.Flags&int(netlink.FLAG_ONLINK) != 0 {
				onlink = " onlink"
			}
			out = append(out, fmt.Sprintf("route %s via %s%s", r.Dst, r.Gw, onlink))
		}
	}
	neighs, err := nl.NeighList(index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if n.State == netlink.NUD_PERMANENT {
			out = append(out, fmt.Sprintf("neigh %s lladdr %s permanent", n.IP, n.HardwareAddr))
		}
	}
	fdb, err := nl.NeighList(index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range fdb {
		self := ""
		if n.Flags&netlink.NTF_SELF != 0 {
			self = " self"
		}
		state := ""
		if n.State&netlink.NUD_PERMANENT != 0 {
			state = " permanent"
		}
		out = append(out, fmt.Sprintf("fdb %s dst %s%s%s", n.HardwareAddr, n.IP, self, state))
	}
	slices.Sort(out)
	return out
}

// wantEntries is what flanneld programs for hosts n... (FLANNEL.md §6).
func wantEntries(peers ...subnet.Peer) []string {
	var out []string
	for _, p := range peers {
		gw, mac := p.Subnet.Addr(), net.HardwareAddr(p.Encap.DstMAC[:])
		out = append(out,
			fmt.Sprintf("route %s via %s onlink", p.Subnet, gw),
			fmt.Sprintf("neigh %s lladdr %s permanent", gw, mac),
			fmt.Sprintf("fdb %s dst %s self permanent", mac, p.Underlay.Addr()))
	}
	slices.Sort(out)
	return out
}

func checkEntries(t *testing.T, nl *netlink.Handle, want []string) {
	t.Helper()
	if got := vxlanEntries(t, nl, "flannel.1"); !slices.Equal(got, want) {
		t.Errorf("flannel.1 holds\n  %q\nwant\n  %q", got, want)
	}
}

func vxlanLink(t *testing.T, nl *netlink.Handle) *netlink.Vxlan {
	t.Helper()
	link, err := nl.LinkByName("flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	v, ok := link.(*netlink.Vxlan)
	if !ok {
		t.Fatalf("flannel.1 is a %s device", link.Type())
	}
	return v
}

// The VTEP is flanneld's flannel.1: vni 1, local and dev the underlay,
// dstport from the config, nolearning, MTU underlay - 50, the lease's /32,
// up; our VtepMAC. A later run takes it over; one configured differently
// is replaced.
func TestKernelVXLANSetup(t *testing.T) {
	nl := privateNetns(t)
	u := addExtIface(t, nl)
	k := testKernelVXLAN(t, nl, u, 8472)
	if err := k.Setup(testLease, testNetwork, 1450); err != nil {
		t.Fatal(err)
	}
	v := vxlanLink(t, nl)
	mac := VtepMAC(u.Addr, 1)
	wantMAC := net.HardwareAddr(mac[:]).String()
	if v.VxlanId != 1 || v.VtepDevIndex != u.Index || !v.SrcAddr.Equal(net.ParseIP("198.18.0.1")) || v.Port != 8472 ||
		v.Learning || v.MTU != 1450 || v.HardwareAddr.String() != wantMAC || v.Flags&net.FlagUp == 0 {
		t.Errorf("flannel.1: vni %d dev %d local %s dstport %d learning %v mtu %d mac %s flags %v; want vni 1 dev %d local 198.18.0.1 dstport 8472 nolearning mtu 1450 mac %s up",
			v.VxlanId, v.VtepDevIndex, v.SrcAddr, v.Port, v.Learning, v.MTU, v.HardwareAddr, v.Flags, u.Index, wantMAC)
	}
	checkAddrs(t, nl, v, "100.96.1.0/32")

	// A restart takes the device over, entries and all, and puts back
	// the MTU and MAC if someone changed them.
	p2 := kernelPeer(t, 2, macOf(2))
	if _, err := k.Sync([]subnet.Peer{p2}); err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetMTU(v, 1400); err != nil {
		t.Fatal(err)
	}
	again := testKernelVXLAN(t, nl, u, 8472)
	if err := again.Setup(testLease, testNetwork, 1450); err != nil {
		t.Fatal(err)
	}
	if w := vxlanLink(t, nl); w.Index != v.Index || w.MTU != 1450 {
		t.Errorf("restart: index %d mtu %d, want the same device (%d) with mtu 1450", w.Index, w.MTU, v.Index)
	}
	checkEntries(t, nl, wantEntries(p2))

	// A new lease replaces the address.
	moved := subnet.Lease{Subnet: netip.MustParsePrefix("100.96.9.0/24")}
	if err := again.Setup(moved, testNetwork, 1450); err != nil {
		t.Fatal(err)
	}
	checkAddrs(t, nl, vxlanLink(t, nl), "100.96.9.0/32")

	// Another port cannot be changed in place: the device is recreated.
	other := testKernelVXLAN(t, nl, u, 4789)
	if err := other.Setup(testLease, testNetwork, 1450); err != nil {
		t.Fatal(err)
	}
	if w := vxlanLink(t, nl); w.Index == v.Index || w.Port != 4789 {
		t.Errorf("port change: index %d port %d, want a new device with port 4789", w.Index, w.Port)
	}

	// So is a device of another type.
	if err := nl.LinkDel(vxlanLink(t, nl)); err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "flannel.1"}}); err != nil {
		t.Fatal(err)
	}
	if err := k.Setup(testLease, testNetwork, 1450); err != nil {
		t.Fatal(err)
	}
	vxlanLink(t, nl)

	if err := k.Teardown(); err != nil {
		t.Fatal(err)
	}
	var notFound netlink.LinkNotFoundError
	if _, err := nl.LinkByName("flannel.1"); !errors.As(err, &notFound) {
		t.Errorf("after Teardown: %v, want no flannel.1", err)
	}
	if err := k.Teardown(); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
}

func checkAddrs(t *testing.T, nl *netlink.Handle, link netlink.Link, want ...string) {
	t.Helper()
	addrs, err := nl.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range addrs {
		got = append(got, a.IPNet.String())
	}
	if !slices.Equal(got, want) {
		t.Errorf("addresses %v, want %v", got, want)
	}
}

// Sync programs each peer as flanneld does and follows every change:
// a new VtepMAC, a new PublicIP, a peer leaving, entries removed by
// someone else, the device itself deleted.
func TestKernelVXLANSync(t *testing.T) {
	nl := privateNetns(t)
	u := addExtIface(t, nl)
	k := testKernelVXLAN(t, nl, u, 8472)
	if err := k.Setup(testLease, testNetwork, 1450); err != nil {
		t.Fatal(err)
	}
	sync := func(peers ...subnet.Peer) {
		t.Helper()
		got, err := k.Sync(peers)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(peers) {
			t.Fatalf("programmed %d of %d peers", len(got), len(peers))
		}
		checkEntries(t, nl, wantEntries(peers...))
	}

	p2, p3 := kernelPeer(t, 2, macOf(2)), kernelPeer(t, 3, macOf(3))
	sync(p2, p3)
	sync(p2, p3) // idempotent

	// Host 3 restarted as a flanneld, with a random MAC; then moved.
	p3 = kernelPeer(t, 3, [6]byte{0x92, 0x9d, 0xe4, 0x12, 0x31, 0xdf})
	sync(p2, p3)
	p3.Underlay = netip.MustParseAddrPort("198.18.0.33:8472")
	sync(p2, p3)

	// Host 2 left.
	sync(p3)

	// Someone deleted the route and the neighbour: put back.
	link := vxlanLink(t, nl)
	if err := nl.RouteDel(&netlink.Route{LinkIndex: link.Index, Dst: prefixToIPNet(p3.Subnet), Gw: p3.Subnet.Addr().AsSlice()}); err != nil {
		t.Fatal(err)
	}
	if err := nl.NeighDel(&netlink.Neigh{LinkIndex: link.Index, IP: p3.Subnet.Addr().AsSlice()}); err != nil {
		t.Fatal(err)
	}
	sync(p3)

	// Someone deleted the device: recreated and programmed again.
	if err := nl.LinkDel(link); err != nil {
		t.Fatal(err)
	}
	sync(p2, p3)
	checkAddrs(t, nl, vxlanLink(t, nl), "100.96.1.0/32")

	// Entries the device holds for no peer go.
	stray := kernelPeer(t, 7, macOf(7))
	if err := k.addPeer(vxlanLink(t, nl).Index, stray, vxlanState{}); err != nil {
		t.Fatal(err)
	}
	sync(p2, p3)
	sync()
}

// A peer that cannot be programmed is skipped whole, the others are
// programmed all the same, and the error names it.
func TestKernelVXLANSyncRollsBackAFailedPeer(t *testing.T) {
	nl := privateNetns(t)
	u := addExtIface(t, nl)
	k := testKernelVXLAN(t, nl, u, 8472)
	if err := k.Setup(testLease, testNetwork, 1450); err != nil {
		t.Fatal(err)
	}
	p2 := kernelPeer(t, 2, macOf(2))
	// An IPv6 underlay address: the kernel refuses the fdb entry of an
	// IPv4 VTEP after the neighbour was added, which must then go too.
	bad := kernelPeer(t, 4, macOf(4))
	bad.Underlay = netip.MustParseAddrPort("[fd00::4]:8472")
	got, err := k.Sync([]subnet.Peer{bad, p2})
	if err == nil {
		t.Fatal("no error for a peer the kernel refuses")
	}
	t.Logf("Sync: %v", err)
	if len(got) != 1 || got[0].Subnet != p2.Subnet {
		t.Errorf("programmed %v, want only %s", got, p2.Subnet)
	}
	checkEntries(t, nl, wantEntries(p2))
}

// The userspace data plane deletes a kernel VTEP left by an earlier run: it
// would hold the UDP port, and its routes would take the peers' traffic.
func TestUserspaceVXLANPrepareDeletesKernelVTEP(t *testing.T) {
	nl := privateNetns(t)
	u := addExtIface(t, nl)
	k := testKernelVXLAN(t, nl, u, 8472)
	if err := k.Setup(testLease, testNetwork, 1450); err != nil {
		t.Fatal(err)
	}
	us := userspaceVXLAN{vxlanBackend: k.vxlanBackend, nl: nl}
	if err := us.Prepare(); err != nil {
		t.Fatal(err)
	}
	var notFound netlink.LinkNotFoundError
	if _, err := nl.LinkByName("flannel.1"); !errors.As(err, &notFound) {
		t.Errorf("flannel.1 still there: %v", err)
	}
	if err := us.Prepare(); err != nil {
		t.Errorf("Prepare with nothing to delete: %v", err)
	}
}
