package tunnel

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/overlayd/overlayd/encap"
	"github.com/overlayd/overlayd/subnet"
)

// backend is what differs between encapsulations: the header, its cost on
// the underlay, what goes into our lease and which peer leases it accepts.
type backend interface {
	Type() string
	Overhead() int // bytes added on the underlay per packet (outer IP, UDP, ...)
	Header() encap.Header
	Port() int
	LeaseData() json.RawMessage
	// Peer turns a registry lease into a forwarding entry; false when the
	// lease belongs to a backend we cannot talk to.
	Peer(l subnet.Lease) (subnet.Peer, bool)
}

// newBackend picks the backend named by the network config.
func newBackend(cfg *subnet.Config) (backend, error) {
	switch cfg.Backend.Type {
	case "udp":
		return udpBackend{port: cfg.Backend.Port}, nil
	case "vxlan", "host-gw":
		return nil, fmt.Errorf("network config Backend.Type %q: not supported by this overlayd yet; use \"udp\"", cfg.Backend.Type)
	default:
		return nil, fmt.Errorf("network config Backend.Type %q: unknown; use \"udp\"", cfg.Backend.Type)
	}
}

// udpBackend is flannel's udp backend: the inner IPv4 packet is the whole
// UDP payload, sent from and to the same port (8285 by default).
type udpBackend struct{ port int }

func (udpBackend) Type() string               { return "udp" }
func (udpBackend) Overhead() int              { return 20 + 8 }
func (udpBackend) Header() encap.Header       { return encap.FlannelUDP }
func (b udpBackend) Port() int                { return b.port }
func (udpBackend) LeaseData() json.RawMessage { return nil }

// Peer accepts flanneld's udp leases, which carry no BackendType at all.
func (b udpBackend) Peer(l subnet.Lease) (subnet.Peer, bool) {
	if l.Attrs.BackendType != "" && l.Attrs.BackendType != "udp" {
		return subnet.Peer{}, false
	}
	if !l.Attrs.PublicIP.Is4() {
		return subnet.Peer{}, false
	}
	return subnet.Peer{
		Subnet:   l.Subnet,
		Underlay: netip.AddrPortFrom(l.Attrs.PublicIP, uint16(b.port)),
		Lease:    l,
	}, true
}
