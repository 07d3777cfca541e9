package tunnel

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/overlayd/overlayd/encap"
	"github.com/overlayd/overlayd/subnet"
)

// The vxlan backend's data planes (--vxlan-dataplane). Both write the same
// lease and speak the same wire format, so a cluster may mix them.
const (
	// DataplaneUserspace: overlayd encapsulates, through a TUN and a UDP
	// socket, as for the udp backend (the default).
	DataplaneUserspace = "userspace"
	// DataplaneKernel: overlayd programs a kernel vxlan device, flannel.<VNI>,
	// as flanneld does, and forwards nothing itself.
	DataplaneKernel = "kernel"
)

// vxlanOverhead is what VXLAN adds on the underlay: outer IPv4 (20), UDP
// (8), VXLAN (8) and the inner Ethernet header (14). flanneld's too.
const vxlanOverhead = 20 + 8 + 8 + 14

// VtepMAC returns the VTEP MAC address of the host whose lease carries
// publicIP, in the VXLAN network vni: 02:<low byte of vni>:<publicIP>, e.g.
// 02:01:c6:12:00:01 for 198.18.0.1 in VNI 1.
//
// flanneld picks a random MAC at every start and publishes it in the lease;
// peers take it from there, so any MAC works on the wire. overlayd derives it
// instead, so that it is the same after a restart and in both data planes:
// a restart then changes nothing in the peers' neighbour and fdb entries,
// and traffic keeps flowing. It is locally administered and unicast, and
// unique in the network because public IPs are.
func VtepMAC(publicIP netip.Addr, vni uint32) [6]byte {
	ip := publicIP.Unmap().As4()
	return [6]byte{0x02, byte(vni), ip[0], ip[1], ip[2], ip[3]}
}

// vxlanLease is the BackendData of a vxlan lease, as flanneld writes it
// (vxlanLeaseAttrs): {"VNI":1,"VtepMAC":"a6:d7:18:cf:e6:cb"}. overlayd may
// add "PartialChecksums":true behind them (subnet.Peer.PartialChecksums);
// flanneld decodes BackendData into its struct, ignoring what it does not
// know.
type vxlanLease struct {
	VNI              uint32
	VtepMAC          string
	PartialChecksums bool `json:",omitempty"`
}

// vxlanLeaseData encodes our BackendData, byte for byte as flanneld would,
// but for the PartialChecksums key.
func vxlanLeaseData(vni uint32, mac [6]byte, partialChecksums bool) json.RawMessage {
	b, err := json.Marshal(vxlanLease{VNI: vni, VtepMAC: net.HardwareAddr(mac[:]).String(), PartialChecksums: partialChecksums})
	if err != nil {
		panic(err) // a struct of a number, a string and a bool always encodes
	}
	return b
}

// parseVXLANLease decodes a peer's BackendData: its VtepMAC, which must be a
// unicast EUI-48 address, and its VNI, which must be vni when present.
func parseVXLANLease(data json.RawMessage, vni uint32) ([6]byte, error) {
	var attrs struct {
		VNI     *uint32
		VtepMAC string
	}
	if len(data) == 0 {
		return [6]byte{}, errors.New("no BackendData: a vxlan lease carries the VTEP's VNI and VtepMAC")
	}
	if err := json.Unmarshal(data, &attrs); err != nil {
		return [6]byte{}, fmt.Errorf("BackendData %s: %w", data, err)
	}
	if attrs.VNI != nil && *attrs.VNI != vni {
		return [6]byte{}, fmt.Errorf("BackendData VNI %d, ours is %d: the hosts disagree on the network config's Backend.VNI", *attrs.VNI, vni)
	}
	hw, err := net.ParseMAC(attrs.VtepMAC)
	if err != nil || len(hw) != 6 {
		return [6]byte{}, fmt.Errorf("BackendData VtepMAC %q is not an Ethernet address", attrs.VtepMAC)
	}
	mac := [6]byte(hw)
	if mac[0]&1 != 0 || mac == [6]byte{} {
		return [6]byte{}, fmt.Errorf("BackendData VtepMAC %s is not a unicast address", hw)
	}
	return mac, nil
}

// vxlanBackend is what both vxlan data planes share: the lease format, the
// MTU, and the peers.
type vxlanBackend struct {
	port int
	vni  uint32
	mac  [6]byte // our VtepMAC
}

func newVXLANBackend(cfg subnet.BackendConfig, publicIP netip.Addr) (vxlanBackend, error) {
	if cfg.VNI < 0 || cfg.VNI > encap.MaxVNI {
		return vxlanBackend{}, fmt.Errorf("network config Backend.VNI %d: use 0 to %d", cfg.VNI, encap.MaxVNI)
	}
	if cfg.Port <= 0 || cfg.Port > 65535 {
		return vxlanBackend{}, fmt.Errorf("network config Backend.Port %d: not a UDP port", cfg.Port)
	}
	if !publicIP.Is4() {
		return vxlanBackend{}, fmt.Errorf("public IP %v: the vxlan backend needs an IPv4 address", publicIP)
	}
	vni := uint32(cfg.VNI)
	return vxlanBackend{port: cfg.Port, vni: vni, mac: VtepMAC(publicIP, vni)}, nil
}

func (vxlanBackend) Type() string  { return subnet.BackendVXLAN }
func (vxlanBackend) Overhead() int { return vxlanOverhead }
func (b vxlanBackend) Port() int   { return b.port }
func (b vxlanBackend) LeaseData(partialChecksums bool) json.RawMessage {
	return vxlanLeaseData(b.vni, b.mac, partialChecksums)
}

// Peer accepts vxlan leases only, as flanneld's vxlan backend does, from
// flanneld and overlayd hosts alike: we send to the peer's VtepMAC, from
// ours, with our VNI.
func (b vxlanBackend) Peer(l subnet.Lease) (subnet.Peer, error) {
	if l.Attrs.Backend() != subnet.BackendVXLAN {
		return subnet.Peer{}, fmt.Errorf("%w %q", errOtherBackend, l.Attrs.Backend())
	}
	if !l.Attrs.PublicIP.Is4() {
		return subnet.Peer{}, fmt.Errorf("PublicIP %v is not an IPv4 address", l.Attrs.PublicIP)
	}
	mac, err := parseVXLANLease(l.Attrs.BackendData, b.vni)
	if err != nil {
		return subnet.Peer{}, err
	}
	return subnet.Peer{
		Subnet:   l.Subnet,
		Underlay: netip.AddrPortFrom(l.Attrs.PublicIP, uint16(b.port)),
		Encap:    encap.Params{VNI: b.vni, SrcMAC: b.mac, DstMAC: mac},
		Lease:    l,
		// A kernel VTEP's lease, flanneld's or ours, never says so.
		PartialChecksums: takesPartialChecksums(l.Attrs.BackendData),
	}, nil
}

// userspaceVXLAN is the vxlan backend with overlayd's own data path:
// RFC 7348 frames that a kernel flannel.<VNI> takes as its own, and takes
// from one. Besides the engine's checks (registered peer, inner source in
// its subnet, inner destination in ours), a frame must carry our VNI, our
// VtepMAC as inner destination and IPv4 (encap.NewVXLAN).
type userspaceVXLAN struct {
	vxlanBackend
	nl  *netlink.Handle // for Prepare
	log *slog.Logger
}

var _ forwarder = userspaceVXLAN{}

func (b userspaceVXLAN) Header() encap.Header { return encap.NewVXLAN(b.vni, b.mac) }

// Prepare deletes the kernel VTEP flannel.<VNI> that a run with
// --vxlan-dataplane=kernel (or flanneld) left in place: it holds our UDP
// port, and its routes to the peers would take their traffic away from
// the TUN.
func (b userspaceVXLAN) Prepare() error {
	name, err := vxlanDeviceName(b.vni)
	if err != nil {
		return nil // no such device can exist
	}
	link, err := b.nl.LinkByName(name)
	if err != nil || link.Type() != "vxlan" {
		return nil // nothing of ours in the way
	}
	if err := b.nl.LinkDel(link); err != nil {
		return fmt.Errorf("userspace vxlan: delete the kernel's vxlan device %s, which holds port %d: %w", name, b.port, err)
	}
	if b.log != nil {
		b.log.Info("deleted the kernel vxlan device of an earlier run: the userspace data plane replaces it", "device", name)
	}
	return nil
}
