package tunnel

import (
	"net/netip"

	"github.com/overlayd/overlayd/subnet"
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
	// iface, of the kind Config.UnderlayKind names. On error it closes
	// what it opened.
	ListenUnderlay(kind string, iface ExtIface, laddr netip.AddrPort, workers int) ([]underlay.Conn, error)
}

// Deps are an Engine's connections to the world, which cmd/overlayd (or a
// test) builds and hands in.
type Deps struct {
	// Registry holds the network config and the leases: flannel's etcd
	// schema in production (subnet/etcd).
	Registry subnet.Registry
	// Host opens the devices; nil means SystemHost.
	Host Host
}
