package tunnel

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/overlayd/overlayd/encap"
	"github.com/overlayd/overlayd/subnet"
)

// backend is what differs between the network config's Backend.Types: its
// cost on the underlay, what goes into our lease and which peer leases it
// accepts. Every backend is also either a forwarder, whose packets overlayd
// moves itself, or a programmer, whose packets the kernel moves.
type backend interface {
	Type() string
	Overhead() int // bytes added on the underlay per packet (outer IP, UDP, ...)
	Port() int     // underlay UDP port; 0 when there is none (host-gw)
	// LeaseData is our lease's BackendData. partialChecksums says whether
	// it advertises that this host takes partial checksums (see
	// subnet.Peer.PartialChecksums); only a forwarder is asked to.
	LeaseData(partialChecksums bool) json.RawMessage
	// Peer turns a registry lease into a peer. The error wraps
	// errOtherBackend for a lease of a backend we cannot talk to, which is
	// normal in a cluster being migrated; anything else is a lease of our
	// backend that we cannot use.
	Peer(l subnet.Lease) (subnet.Peer, error)
}

// A forwarder's packets go through overlayd: a TUN, an encapsulation
// header, an underlay socket on Port.
type forwarder interface {
	backend
	Header() encap.Header
	// Prepare clears what would stand in the data path's way, such as a
	// kernel device an earlier run left holding the port. It runs before
	// the TUN and the sockets are opened.
	Prepare() error
}

// A programmer's packets never reach overlayd: it configures the kernel to
// forward them (devices, routes, neighbours) and keeps that configuration
// in line with the peers.
type programmer interface {
	backend
	// Device is the interface that carries the overlay, for status; ""
	// when there is none (host-gw routes over the underlay itself).
	Device() string
	// Setup prepares the kernel for this host's lease, reusing what an
	// earlier run left in place when it still fits. Peers come later.
	Setup(lease subnet.Lease, network netip.Prefix, mtu int) error
	// Sync makes the kernel's per-peer state match peers exactly: it adds
	// what is missing or different and removes what belongs to no peer.
	// It is idempotent, and cheap when nothing changed. A peer that cannot
	// be programmed is skipped, leaving no partial state, and the others
	// are programmed all the same: Sync returns the peers now in place and
	// one error naming every peer skipped.
	Sync(peers []subnet.Peer) ([]subnet.Peer, error)
	// Teardown removes everything Setup and Sync made.
	Teardown() error
}

// errOtherBackend marks a lease written by another backend type.
var errOtherBackend = errors.New("lease of another backend")

// backendEnv is what the backends need to know about this host.
type backendEnv struct {
	PublicIP  netip.Addr // written into our lease
	ExtIface  ExtIface   // the interface peers are reached through
	Dataplane string     // vxlan: DataplaneUserspace or DataplaneKernel
	Log       *slog.Logger
}

// newBackend picks the backend named by the network config.
func newBackend(cfg *subnet.Config, env backendEnv) (backend, error) {
	switch cfg.Backend.Type {
	case subnet.BackendUDP:
		return udpBackend{port: cfg.Backend.Port}, nil
	case subnet.BackendVXLAN:
		vb, err := newVXLANBackend(cfg.Backend, env.PublicIP)
		if err != nil {
			return nil, err
		}
		switch env.Dataplane {
		case DataplaneUserspace, "":
			return userspaceVXLAN{vxlanBackend: vb, nl: &netlink.Handle{}, log: env.Log}, nil
		case DataplaneKernel:
			return newKernelVXLAN(vb, env.ExtIface, env.Log)
		default:
			return nil, fmt.Errorf("--vxlan-dataplane %q: use %q or %q", env.Dataplane, DataplaneUserspace, DataplaneKernel)
		}
	case subnet.BackendHostGW:
		return newHostGW(env.ExtIface, env.Log), nil
	default:
		return nil, fmt.Errorf("network config Backend.Type %q: unknown; use \"udp\", \"vxlan\" or \"host-gw\"", cfg.Backend.Type)
	}
}

// udpBackend is flannel's udp backend: the inner IPv4 packet is the whole
// UDP payload, sent from and to the same port (8285 by default).
type udpBackend struct{ port int }

var _ forwarder = udpBackend{}

func (udpBackend) Type() string         { return subnet.BackendUDP }
func (udpBackend) Overhead() int        { return 20 + 8 }
func (udpBackend) Header() encap.Header { return encap.FlannelUDP }
func (b udpBackend) Port() int          { return b.port }
func (udpBackend) Prepare() error       { return nil }

// LeaseData is none, as flanneld writes udp leases, unless there is a
// capability to advertise.
func (udpBackend) LeaseData(partialChecksums bool) json.RawMessage {
	if !partialChecksums {
		return nil
	}
	return json.RawMessage(`{"PartialChecksums":true}`)
}

// Peer accepts flanneld's udp leases, which carry no BackendType at all.
func (b udpBackend) Peer(l subnet.Lease) (subnet.Peer, error) {
	if l.Attrs.Backend() != subnet.BackendUDP {
		return subnet.Peer{}, fmt.Errorf("%w %q", errOtherBackend, l.Attrs.BackendType)
	}
	if !l.Attrs.PublicIP.Is4() {
		return subnet.Peer{}, fmt.Errorf("PublicIP %v is not an IPv4 address", l.Attrs.PublicIP)
	}
	return subnet.Peer{
		Subnet:           l.Subnet,
		Underlay:         netip.AddrPortFrom(l.Attrs.PublicIP, uint16(b.port)),
		Lease:            l,
		PartialChecksums: takesPartialChecksums(l.Attrs.BackendData),
	}, nil
}

// takesPartialChecksums reports whether a peer's BackendData says that it
// takes partial checksums: "PartialChecksums":true, beside the backend's
// own keys. flanneld writes no such key, and ignores it in our leases.
// Anything else, malformed data included, means complete checksums, which
// every receiver takes.
func takesPartialChecksums(data json.RawMessage) bool {
	var caps struct{ PartialChecksums bool }
	return len(data) > 0 && json.Unmarshal(data, &caps) == nil && caps.PartialChecksums
}
