package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
)

// ExtIface is the host interface the overlay runs over: flanneld's external
// interface (--iface).
type ExtIface struct {
	Name  string
	Index int
	Addr  netip.Addr // the interface's IPv4 address: the socket binds here, as flanneld's does
	MTU   int
}

// ResolveExtIface finds the interface named by spec, which is an interface
// name or one of its IPv4 addresses, as flanneld's --iface accepts. An empty
// spec picks the interface of the default route.
func ResolveExtIface(spec string) (ExtIface, error) {
	var (
		link netlink.Link
		err  error
	)
	switch {
	case spec == "":
		link, err = defaultRouteLink()
	case isIP(spec):
		link, err = linkByAddr(netip.MustParseAddr(spec))
	default:
		link, err = netlink.LinkByName(spec)
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return ExtIface{}, fmt.Errorf("--iface %q: no such interface (see `ip -br link`); give an interface name or one of its IPv4 addresses", spec)
		}
	}
	if err != nil {
		return ExtIface{}, fmt.Errorf("--iface %q: %w", spec, err)
	}
	attrs := link.Attrs()
	u := ExtIface{Name: attrs.Name, Index: attrs.Index, MTU: attrs.MTU}
	if isIP(spec) {
		u.Addr = netip.MustParseAddr(spec)
		return u, nil
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return ExtIface{}, fmt.Errorf("--iface %q: list addresses: %w", spec, err)
	}
	var unusable []string
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok {
			continue
		}
		if ip.IsGlobalUnicast() {
			u.Addr = ip
			return u, nil
		}
		unusable = append(unusable, ip.String()+" ("+addrKind(ip)+")")
	}
	if len(unusable) > 0 {
		return ExtIface{}, fmt.Errorf("--iface %q: interface %s has only %s, which other hosts cannot send to; name the interface that reaches them (see `ip -br addr`)",
			spec, attrs.Name, strings.Join(unusable, ", "))
	}
	return ExtIface{}, fmt.Errorf("--iface %q: interface %s has no IPv4 address; assign one or name another interface", spec, attrs.Name)
}

// addrKind says why an IPv4 address is not one other hosts can reach.
func addrKind(ip netip.Addr) string {
	switch {
	case ip.IsLoopback():
		return "loopback"
	case ip.IsLinkLocalUnicast():
		return "link-local"
	case ip.IsMulticast():
		return "multicast"
	case ip.IsUnspecified():
		return "unspecified"
	}
	return "not a unicast address"
}

func isIP(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is4()
}

func defaultRouteLink() (netlink.Link, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			return netlink.LinkByIndex(r.LinkIndex)
		}
	}
	return nil, errors.New("no default route to pick an interface from; set --iface to the interface that reaches the other hosts")
}

func linkByAddr(ip netip.Addr) (netlink.Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	for _, l := range links {
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if a.IP.Equal(net.IP(ip.AsSlice())) {
				return l, nil
			}
		}
	}
	return nil, fmt.Errorf("no interface has address %s (see `ip -br addr`)", ip)
}

// ConfigureTUN gives the TUN its MTU and flanneld's addressing: the lease's
// network address as a /32 and a route for the whole overlay network
// through it. Equivalent to:
//
//	ip link set <tun> mtu <mtu> up
//	ip addr replace <subnet.Addr()>/32 dev <tun>
//	ip route replace <network> dev <tun>
func ConfigureTUN(name string, mtu int, subnet, network netip.Prefix) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("TUN %s: %w", name, err)
	}
	if err := netlink.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("TUN %s: set MTU %d: %w", name, mtu, err)
	}
	addr := &netlink.Addr{IPNet: prefixToIPNet(netip.PrefixFrom(subnet.Addr(), 32))}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("TUN %s: add address %s: %w", name, addr.IPNet, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("TUN %s: set up: %w", name, err)
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: prefixToIPNet(network), Scope: netlink.SCOPE_LINK}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("TUN %s: route %s: %w", name, network, err)
	}
	return nil
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// IPForwarding reports whether the kernel forwards IPv4 in this network
// namespace: without it, packets between the TUN and the bridge are dropped.
func IPForwarding() (bool, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) == "1", nil
}
