package tunnel

import (
	"net/netip"
	"time"

	"github.com/overlayd/overlayd/subnet"
	"github.com/overlayd/overlayd/tunnel/idlepoll"
	"github.com/overlayd/overlayd/tunnel/tun"
	"github.com/overlayd/overlayd/tunnel/underlay"
)

// Host is the machine an Engine runs on: where it finds the interface that
// reaches the other hosts, and how it opens and configures the devices of
// the data path. SystemHost is the real machine; tests hand the engine
// in-memory devices instead, so that two engines can forward to each other
// without root, a kernel TUN or sockets.
type Host interface {
	// ExtIface resolves --iface: an interface name, one of its IPv4
	// addresses, or "" for the interface of the default route.
	ExtIface(spec string) (ExtIface, error)

	// IPForwarding reports whether the host forwards IPv4: without it the
	// kernel drops packets between the TUN and the bridge.
	IPForwarding() (bool, error)

	// OpenTUN creates the TUN interface name with the given number of
	// queues, one Device each.
	OpenTUN(name string, queues int, opts ...tun.Option) ([]tun.Device, error)

	// ConfigureTUN gives the TUN flanneld's addressing: mtu, addr as its
	// /32 address, a route to network through it, and brings it up.
	ConfigureTUN(name string, mtu int, addr, network netip.Prefix) error

	// ListenUnderlay opens one underlay Conn per worker, bound to laddr on
	// iface, of the kind Config.UnderlayKind names, whose reads busy-poll
	// for up to busyPoll where the kind can (Config.BusyPoll). On error it
	// closes what it opened.
	ListenUnderlay(kind string, iface ExtIface, laddr netip.AddrPort, workers int, busyPoll time.Duration) ([]underlay.Conn, error)
}

// Deps are an Engine's connections to the world, which cmd/overlayd (or a
// test) builds and hands in.
type Deps struct {
	// Registry holds the network config and the leases: flannel's etcd
	// schema in production (subnet/etcd).
	Registry subnet.Registry
	// Host opens the devices; nil means SystemHost.
	Host Host
	// Firewall keeps the packet filter rules of the overlay; nil means
	// overlayd leaves the packet filter alone.
	Firewall Firewall
	// IdleRequest keeps idle CPUs polling while packets flow
	// (Config.IdlePoll); nil means they halt as the kernel sees fit.
	IdleRequest idlepoll.Request
}

// Firewall keeps the host's packet filter in line with the lease, as
// flanneld's --ip-masq and --iptables-forward-rules do: forwarding to and
// from the network accepted, and traffic leaving the network masqueraded
// if asked. cmd/overlayd builds it (package firewall).
type Firewall interface {
	// Masquerades reports whether the rules masquerade traffic leaving
	// the network: FLANNEL_IPMASQ in the subnet file.
	Masquerades() bool
	// Ensure makes the rules those of network and this host's subnet,
	// with other hosts' traffic arriving on the device ingress, changing
	// only what differs, so traffic never meets a moment without them. It
	// returns how many rules it added or removed. The engine calls it
	// before readiness, then every Config.FirewallResync to put back what
	// something else removed.
	Ensure(network, subnet netip.Prefix, ingress string) (changed int, err error)
	// Remove deletes the rules (--release-on-exit).
	Remove() error
}
