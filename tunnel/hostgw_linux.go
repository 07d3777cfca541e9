package tunnel

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/overlayd/overlayd/subnet"
)

// hostGW is flannel's host-gw backend: no encapsulation and no device, one
// route per peer subnet via the peer's PublicIP on the underlay interface,
//
//	ip route replace <peer subnet> via <peer PublicIP> dev <iface>
//
// which works only when every host reaches every other directly, on one L2
// segment. A peer that is not is skipped with an error that says so, rather
// than given a route the kernel could not use.
type hostGW struct {
	nl       *netlink.Handle
	extIface ExtIface
	log      *slog.Logger
	network  netip.Prefix // set by Setup: routes to subnets in it are ours
}

var _ programmer = (*hostGW)(nil)

// errNotOnLink: a host-gw peer's PublicIP is not directly reachable from
// the underlay interface.
var errNotOnLink = errors.New("not on the same L2 segment")

func newHostGW(u ExtIface, log *slog.Logger) *hostGW {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &hostGW{nl: &netlink.Handle{}, extIface: u, log: log}
}

func (*hostGW) Type() string                   { return subnet.BackendHostGW }
func (*hostGW) Overhead() int                  { return 0 }
func (*hostGW) Port() int                      { return 0 }
func (*hostGW) LeaseData(bool) json.RawMessage { return nil }
func (*hostGW) Device() string                 { return "" }

// Peer accepts host-gw leases only, as flanneld's host-gw backend does.
func (*hostGW) Peer(l subnet.Lease) (subnet.Peer, error) {
	if l.Attrs.Backend() != subnet.BackendHostGW {
		return subnet.Peer{}, fmt.Errorf("%w %q", errOtherBackend, l.Attrs.Backend())
	}
	if !l.Attrs.PublicIP.Is4() {
		return subnet.Peer{}, fmt.Errorf("PublicIP %v is not an IPv4 address", l.Attrs.PublicIP)
	}
	return subnet.Peer{Subnet: l.Subnet, Underlay: netip.AddrPortFrom(l.Attrs.PublicIP, 0), Lease: l}, nil
}

// Setup has nothing to create: the underlay interface carries the overlay.
func (h *hostGW) Setup(lease subnet.Lease, network netip.Prefix, mtu int) error {
	h.network = network
	return nil
}

// Sync routes each peer's subnet via its PublicIP, and deletes the routes
// to other subnets of the network via a gateway on the underlay interface:
// those of peers that left, or were skipped.
func (h *hostGW) Sync(peers []subnet.Peer) ([]subnet.Peer, error) {
	have, err := listPeerRoutes(h.nl, h.extIface.Index, h.network)
	if err != nil {
		return nil, fmt.Errorf("host-gw: %w", err)
	}
	routes := make(map[netip.Prefix]netlink.Route, len(have))
	for _, r := range have {
		routes[ipNetPrefix(r.Dst)] = r
	}
	var (
		programmed []subnet.Peer
		keep       = make(map[netip.Prefix]bool, len(peers))
		errs       []error
	)
	for _, p := range peers {
		if keep[p.Subnet] {
			continue // the registry's keys are unique; be safe anyway
		}
		if err := h.addPeer(p, routes); err != nil {
			errs = append(errs, fmt.Errorf("host-gw: peer %s at %s: %w", p.Subnet, p.Underlay.Addr(), err))
			continue
		}
		keep[p.Subnet] = true
		programmed = append(programmed, p)
	}
	for dst, r := range routes {
		if !keep[dst] {
			if err := h.nl.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("host-gw: delete route %s via %s: %w", dst, r.Gw, err))
			}
		}
	}
	return programmed, errors.Join(errs...)
}

func (h *hostGW) addPeer(p subnet.Peer, have map[netip.Prefix]netlink.Route) error {
	gw := p.Underlay.Addr()
	if err := h.checkOnLink(gw); err != nil {
		return err
	}
	want := netlink.Route{LinkIndex: h.extIface.Index, Dst: prefixToIPNet(p.Subnet), Gw: gw.AsSlice()}
	if r, ok := have[p.Subnet]; ok && sameNextHop(r, want) {
		return nil
	}
	if err := h.nl.RouteReplace(&want); err != nil {
		return fmt.Errorf("route %s via %s dev %s: %w", p.Subnet, gw, h.extIface.Name, err)
	}
	return nil
}

// checkOnLink asks the kernel how it reaches gw: host-gw needs it directly
// on the underlay interface, with no router in between.
func (h *hostGW) checkOnLink(gw netip.Addr) error {
	routes, err := h.nl.RouteGet(gw.AsSlice())
	if err != nil {
		return fmt.Errorf("%w: no route to %s from this host (%w); host-gw needs every host directly reachable on %s, use the vxlan backend across routers",
			errNotOnLink, gw, err, h.extIface.Name)
	}
	if len(routes) == 0 {
		return fmt.Errorf("%w: no route to %s", errNotOnLink, gw)
	}
	r := routes[0]
	if r.Gw != nil || r.LinkIndex != h.extIface.Index {
		via := "another interface"
		if r.Gw != nil {
			via = "router " + r.Gw.String()
		}
		return fmt.Errorf("%w: the kernel reaches %s via %s, not directly on %s; host-gw needs every host on one L2 segment, use the vxlan backend across routers",
			errNotOnLink, gw, via, h.extIface.Name)
	}
	return nil
}

// Teardown deletes every route Sync made.
func (h *hostGW) Teardown() error {
	_, err := h.Sync(nil)
	return err
}

// listPeerRoutes returns the IPv4 routes of the main table out of link
// linkIndex that go via a gateway to a subnet of network: what the kernel
// backends make for their peers, and nobody else should.
func listPeerRoutes(nl *netlink.Handle, linkIndex int, network netip.Prefix) ([]netlink.Route, error) {
	filter := &netlink.Route{LinkIndex: linkIndex, Table: unix.RT_TABLE_MAIN}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return nl.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	out := routes[:0]
	for _, r := range routes {
		dst := ipNetPrefix(r.Dst)
		if r.Gw != nil && dst.IsValid() && dst.Bits() > network.Bits() && network.Contains(dst.Addr()) {
			out = append(out, r)
		}
	}
	return out, nil
}

// sameNextHop reports whether route have already does what want asks.
func sameNextHop(have, want netlink.Route) bool {
	const onlink = int(netlink.FLAG_ONLINK)
	return have.LinkIndex == want.LinkIndex && have.Gw.Equal(want.Gw) && have.Flags&onlink == want.Flags&onlink
}

// dumpRetries bounds how often a netlink dump is repeated when the kernel
// reports that a concurrent change interrupted it.
const dumpRetries = 5

func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	for i := 0; ; i++ {
		out, err := dump()
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < dumpRetries {
			continue
		}
		return out, err
	}
}

// ipNetPrefix converts a route's or address's IPv4 network; the zero Prefix
// for nil (a default route) or IPv6.
func ipNetPrefix(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok {
		return netip.Prefix{}
	}
	bits, size := n.Mask.Size()
	if size != 32 {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(a, bits).Masked()
}
