package tunnel

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/overlayd/overlayd/subnet"
)

// kernelVXLAN is the vxlan backend with the kernel's data plane
// (--vxlan-dataplane=kernel), programmed as flanneld programs it
// (FLANNEL.md §6):
//
//	ip link add flannel.<VNI> type vxlan id <VNI> local <iface IP> dev <iface> dstport <port> nolearning
//	ip link set flannel.<VNI> address <VtepMAC> mtu <underlay MTU - 50> up
//	ip addr add <subnet>.0/32 dev flannel.<VNI>
//
// and per peer
//
//	ip neigh replace <peer subnet>.0 lladdr <peer VtepMAC> dev flannel.<VNI> nud permanent
//	bridge fdb replace <peer VtepMAC> dev flannel.<VNI> dst <peer PublicIP> self permanent
//	ip route replace <peer subnet> via <peer subnet>.0 dev flannel.<VNI> onlink
//
// Unlike flanneld's, its VtepMAC is VtepMAC(publicIP, VNI), the same as the
// userspace data plane's, so hosts may switch between the two and mix.
type kernelVXLAN struct {
	vxlanBackend
	nl       *netlink.Handle
	extIface ExtIface
	log      *slog.Logger
	name     string

	// Set by Setup.
	addr    netip.Prefix // the lease's network address, /32
	network netip.Prefix
	mtu     int
}

var _ programmer = (*kernelVXLAN)(nil)

func newKernelVXLAN(vb vxlanBackend, u ExtIface, log *slog.Logger) (*kernelVXLAN, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	name, err := vxlanDeviceName(vb.vni)
	if err != nil {
		return nil, err
	}
	return &kernelVXLAN{vxlanBackend: vb, nl: &netlink.Handle{}, extIface: u, log: log, name: name}, nil
}

// vxlanDeviceName is flanneld's name for the VTEP of vni, flannel.<vni>.
func vxlanDeviceName(vni uint32) (string, error) {
	name := "flannel." + strconv.FormatUint(uint64(vni), 10)
	if len(name) > unix.IFNAMSIZ-1 {
		return "", fmt.Errorf("network config Backend.VNI %d: the device would be %s, longer than an interface name may be (%d); use a VNI below 10000000",
			vni, name, unix.IFNAMSIZ-1)
	}
	return name, nil
}

func (k *kernelVXLAN) Device() string { return k.name }

// Setup creates the VTEP, or takes over the one an earlier run left if it is
// configured as we want it, and gives it our address.
func (k *kernelVXLAN) Setup(lease subnet.Lease, network netip.Prefix, mtu int) error {
	k.addr = netip.PrefixFrom(lease.Subnet.Addr(), 32)
	k.network = network
	k.mtu = mtu
	_, err := k.ensureDevice()
	return err
}

// device is the VTEP we want.
func (k *kernelVXLAN) device() *netlink.Vxlan {
	return &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{
			Name:         k.name,
			MTU:          k.mtu,
			HardwareAddr: net.HardwareAddr(k.mac[:]),
		},
		VxlanId:      int(k.vni),
		VtepDevIndex: k.extIface.Index,
		SrcAddr:      k.extIface.Addr.AsSlice(),
		Port:         k.port,
		Learning:     false,
	}
}

// ensureDevice makes the VTEP exist, configured, addressed and up, and
// returns its index. A device of our name that differs in what cannot be
// changed in place is replaced; one this call created is deleted again when
// a later step fails.
func (k *kernelVXLAN) ensureDevice() (int, error) {
	want := k.device()
	link, err := k.nl.LinkByName(k.name)
	created := false
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		link, err = k.createDevice(want)
		created = true
	case err != nil:
		return 0, fmt.Errorf("vxlan device %s: %w", k.name, err)
	default:
		if why := vxlanIncompatible(want, link); why != "" {
			k.log.Warn("replacing a vxlan device configured differently", "device", k.name, "difference", why)
			if err := k.nl.LinkDel(link); err != nil {
				return 0, fmt.Errorf("vxlan device %s: delete it to recreate it (%s): %w", k.name, why, err)
			}
			link, err = k.createDevice(want)
			created = true
		}
	}
	if err != nil {
		return 0, err
	}
	if err := k.configureDevice(link); err != nil {
		if created {
			k.nl.LinkDel(link)
		}
		return 0, fmt.Errorf("vxlan device %s: %w", k.name, err)
	}
	return link.Attrs().Index, nil
}

func (k *kernelVXLAN) createDevice(want *netlink.Vxlan) (netlink.Link, error) {
	if err := k.nl.LinkAdd(want); err != nil {
		return nil, fmt.Errorf("create vxlan device %s (vni %d, local %s, dev %s, dstport %d): %w",
			k.name, k.vni, k.extIface.Addr, k.extIface.Name, k.port, err)
	}
	link, err := k.nl.LinkByName(k.name)
	if err != nil {
		k.nl.LinkDel(want)
		return nil, fmt.Errorf("vxlan device %s: created but not found: %w", k.name, err)
	}
	k.log.Info("created vxlan device", "device", k.name, "vni", k.vni, "local", k.extIface.Addr,
		"dev", k.extIface.Name, "port", k.port, "vtep_mac", link.Attrs().HardwareAddr.String(), "mtu", k.mtu)
	return link, nil
}

// vxlanIncompatible says how an existing link differs from want in what
// only recreating it changes; "" if it does not.
func vxlanIncompatible(want *netlink.Vxlan, have netlink.Link) string {
	v, ok := have.(*netlink.Vxlan)
	switch {
	case !ok:
		return "type " + have.Type() + ", not vxlan"
	case v.VxlanId != want.VxlanId:
		return fmt.Sprintf("vni %d, want %d", v.VxlanId, want.VxlanId)
	case v.VtepDevIndex != want.VtepDevIndex:
		return fmt.Sprintf("dev index %d, want %d", v.VtepDevIndex, want.VtepDevIndex)
	case !v.SrcAddr.Equal(want.SrcAddr):
		return fmt.Sprintf("local %v, want %v", v.SrcAddr, want.SrcAddr)
	case v.Port != want.Port:
		return fmt.Sprintf("dstport %d, want %d", v.Port, want.Port)
	case v.Learning:
		return "learning on, want nolearning"
	case len(v.Group) > 0 && !v.Group.IsUnspecified():
		return fmt.Sprintf("group or remote %v, want none", v.Group)
	case v.GBP, v.FlowBased, v.L2miss, v.L3miss:
		return "gbp, external, l2miss or l3miss set, want none"
	}
	return ""
}

// configureDevice sets what can change in place: the MTU, the MAC, our
// address as the only one, and up.
func (k *kernelVXLAN) configureDevice(link netlink.Link) error {
	attrs := link.Attrs()
	if attrs.MTU != k.mtu {
		if err := k.nl.LinkSetMTU(link, k.mtu); err != nil {
			return fmt.Errorf("set MTU %d: %w", k.mtu, err)
		}
	}
	if mac := net.HardwareAddr(k.mac[:]); attrs.HardwareAddr.String() != mac.String() {
		if err := k.nl.LinkSetHardwareAddr(link, mac); err != nil {
			return fmt.Errorf("set address %s: %w", mac, err)
		}
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return k.nl.AddrList(link, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	found := false
	for _, a := range addrs {
		if ipNetPrefix(a.IPNet) == k.addr {
			found = true
			continue
		}
		// An earlier lease's address: the device is ours alone.
		if err := k.nl.AddrDel(link, &a); err != nil {
			return fmt.Errorf("delete old address %s: %w", a.IPNet, err)
		}
	}
	if !found {
		if err := k.nl.AddrAdd(link, &netlink.Addr{IPNet: prefixToIPNet(k.addr)}); err != nil {
			return fmt.Errorf("add address %s: %w", k.addr, err)
		}
	}
	if attrs.Flags&net.FlagUp == 0 {
		if err := k.nl.LinkSetUp(link); err != nil {
			return fmt.Errorf("set up: %w", err)
		}
	}
	return nil
}

// vxlanState is what the kernel holds on the VTEP, by key: routes by
// destination, neighbours by IP, fdb entries by MAC.
type vxlanState struct {
	routes map[netip.Prefix]netlink.Route
	neighs map[netip.Addr]netlink.Neigh
	fdb    map[[6]byte]netlink.Neigh
}

func (k *kernelVXLAN) readState(index int) (vxlanState, error) {
	s := vxlanState{
		routes: make(map[netip.Prefix]netlink.Route),
		neighs: make(map[netip.Addr]netlink.Neigh),
		fdb:    make(map[[6]byte]netlink.Neigh),
	}
	routes, err := listPeerRoutes(k.nl, index, k.network)
	if err != nil {
		return s, err
	}
	for _, r := range routes {
		s.routes[ipNetPrefix(r.Dst)] = r
	}
	neighs, err := retryDump(func() ([]netlink.Neigh, error) { return k.nl.NeighList(index, netlink.FAMILY_V4) })
	if err != nil {
		return s, fmt.Errorf("list neighbours: %w", err)
	}
	for _, n := range neighs {
		// Only permanent entries are ours; the kernel ages out the rest.
		if ip, ok := netip.AddrFromSlice(n.IP.To4()); ok && n.State&netlink.NUD_PERMANENT != 0 {
			s.neighs[ip] = n
		}
	}
	fdb, err := retryDump(func() ([]netlink.Neigh, error) { return k.nl.NeighList(index, unix.AF_BRIDGE) })
	if err != nil {
		return s, fmt.Errorf("list fdb: %w", err)
	}
	for _, n := range fdb {
		if len(n.HardwareAddr) == 6 && n.HardwareAddr[0]&1 == 0 && n.IP != nil {
			s.fdb[[6]byte(n.HardwareAddr)] = n
		}
	}
	return s, nil
}

// Sync programs each peer's neighbour, fdb entry and route, and deletes
// the entries on the VTEP that belong to no peer. It recreates the VTEP
// first if someone deleted or changed it.
func (k *kernelVXLAN) Sync(peers []subnet.Peer) ([]subnet.Peer, error) {
	index, err := k.ensureDevice()
	if err != nil {
		return nil, err
	}
	have, err := k.readState(index)
	if err != nil {
		return nil, fmt.Errorf("vxlan device %s: %w", k.name, err)
	}
	var (
		programmed []subnet.Peer
		keepRoute  = make(map[netip.Prefix]bool, len(peers))
		keepNeigh  = make(map[netip.Addr]bool, len(peers))
		keepFDB    = make(map[[6]byte]bool, len(peers))
		errs       []error
	)
	for _, p := range peers {
		if keepRoute[p.Subnet] || keepFDB[p.Encap.DstMAC] {
			errs = append(errs, fmt.Errorf("vxlan: peer %s at %s: subnet or VtepMAC %s already used by another peer",
				p.Subnet, p.Underlay.Addr(), net.HardwareAddr(p.Encap.DstMAC[:])))
			continue
		}
		if err := k.addPeer(index, p, have); err != nil {
			errs = append(errs, fmt.Errorf("vxlan: peer %s at %s: %w", p.Subnet, p.Underlay.Addr(), err))
			continue
		}
		keepRoute[p.Subnet] = true
		keepNeigh[p.Subnet.Addr()] = true
		keepFDB[p.Encap.DstMAC] = true
		programmed = append(programmed, p)
	}
	for dst, r := range have.routes {
		if !keepRoute[dst] {
			errs = append(errs, ignoreGone(k.nl.RouteDel(&r), "delete route %s", dst))
		}
	}
	for ip, n := range have.neighs {
		if !keepNeigh[ip] {
			errs = append(errs, ignoreGone(k.nl.NeighDel(&n), "delete neighbour %s", ip))
		}
	}
	for mac, n := range have.fdb {
		if !keepFDB[mac] {
			errs = append(errs, ignoreGone(k.nl.NeighDel(&n), "delete fdb entry %s", n.HardwareAddr))
		}
	}
	return programmed, errors.Join(errs...)
}

// addPeer programs what p needs and is not already in have, in flanneld's
// order; when a step fails, the earlier ones are undone, so that the peer is
// either fully programmed or absent.
func (k *kernelVXLAN) addPeer(index int, p subnet.Peer, have vxlanState) error {
	gw := p.Subnet.Addr()
	mac := net.HardwareAddr(p.Encap.DstMAC[:])
	neigh := &netlink.Neigh{
		LinkIndex:    index,
		Family:       netlink.FAMILY_V4,
		State:        netlink.NUD_PERMANENT,
		Type:         unix.RTN_UNICAST,
		IP:           gw.AsSlice(),
		HardwareAddr: mac,
	}
	fdb := &netlink.Neigh{
		LinkIndex:    index,
		Family:       unix.AF_BRIDGE,
		State:        netlink.NUD_PERMANENT,
		Flags:        netlink.NTF_SELF,
		IP:           p.Underlay.Addr().AsSlice(),
		HardwareAddr: mac,
	}
	route := &netlink.Route{
		LinkIndex: index,
		Dst:       prefixToIPNet(p.Subnet),
		Gw:        gw.AsSlice(),
		Flags:     int(netlink.FLAG_ONLINK),
	}

	if n, ok := have.neighs[gw]; !ok || n.HardwareAddr.String() != mac.String() {
		if err := k.nl.NeighSet(neigh); err != nil {
			return fmt.Errorf("neighbour %s lladdr %s: %w", gw, mac, err)
		}
	}
	if n, ok := have.fdb[p.Encap.DstMAC]; !ok || !n.IP.Equal(fdb.IP) {
		if err := k.nl.NeighSet(fdb); err != nil {
			k.nl.NeighDel(neigh)
			return fmt.Errorf("fdb %s dst %s: %w", mac, p.Underlay.Addr(), err)
		}
	}
	if r, ok := have.routes[p.Subnet]; !ok || !sameNextHop(r, *route) {
		if err := k.nl.RouteReplace(route); err != nil {
			k.nl.NeighDel(fdb)
			k.nl.NeighDel(neigh)
			return fmt.Errorf("route %s via %s onlink: %w", p.Subnet, gw, err)
		}
	}
	return nil
}

// Teardown deletes the VTEP, and with it every neighbour, fdb entry and
// route on it.
func (k *kernelVXLAN) Teardown() error {
	return deleteVXLANDevice(k.nl, k.name)
}

// deleteVXLANDevice deletes the vxlan device name if it exists.
func deleteVXLANDevice(nl *netlink.Handle, name string) error {
	link, err := nl.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("vxlan device %s: %w", name, err)
	}
	if link.Type() != "vxlan" {
		return fmt.Errorf("%s is a %s device, not the vxlan device it should be; delete or rename it", name, link.Type())
	}
	if err := nl.LinkDel(link); err != nil {
		return fmt.Errorf("delete vxlan device %s: %w", name, err)
	}
	return nil
}

// ignoreGone wraps a deletion's error, nil when the entry was gone already.
func ignoreGone(err error, format string, args ...any) error {
	if err == nil || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}
