package encap

import (
	"encoding/binary"
	"fmt"
)

// VXLAN framing (RFC 7348): an 8-byte VXLAN header, then the inner Ethernet
// header without FCS, then the inner IPv4 packet.
const (
	// MaxVNI is the largest VXLAN network identifier (24 bits).
	MaxVNI = 1<<24 - 1

	vxlanHeaderLen    = 8
	ethernetHeaderLen = 14
	vxlanLen          = vxlanHeaderLen + ethernetHeaderLen

	vxlanFlagsVNI = 0x08000000 // first word: I flag set, everything else reserved
	etherTypeIPv4 = 0x0800
	// minEtherPayload is what a padded minimum-size Ethernet frame carries.
	minEtherPayload = 46
)

// NewVXLAN returns the VXLAN encapsulation of a local VTEP with network
// identifier vni and Ethernet address localMAC, wire-compatible with the
// Linux vxlan device flanneld programs (flannel.<VNI>).
//
// Encap writes flags 0x08, p.VNI, and an inner Ethernet header from
// p.SrcMAC to p.DstMAC with ethertype IPv4. Decap accepts only what the
// kernel device would deliver: flags exactly 0x08 with all reserved bits
// zero (no extensions), our VNI, our MAC as the inner destination, and an
// IPv4 ethertype; a minimum-size frame's Ethernet padding is trimmed.
//
// NewVXLAN panics if vni exceeds MaxVNI; configuration is validated before
// a data path is built.
func NewVXLAN(vni uint32, localMAC [6]byte) Header {
	if vni > MaxVNI {
		panic(fmt.Sprintf("encap: VXLAN VNI %d exceeds %d", vni, MaxVNI))
	}
	return &vxlan{vni: vni, mac: localMAC}
}

type vxlan struct {
	vni uint32
	mac [6]byte
}

func (*vxlan) Len() int { return vxlanLen }

func (*vxlan) Encap(frame []byte, p *Params) error {
	if len(frame) < vxlanLen {
		return ErrNoHeadroom
	}
	if p.VNI > MaxVNI {
		return ErrVNIOutOfRange
	}
	binary.BigEndian.PutUint32(frame[0:], vxlanFlagsVNI)
	binary.BigEndian.PutUint32(frame[4:], p.VNI<<8)
	copy(frame[8:14], p.DstMAC[:])
	copy(frame[14:20], p.SrcMAC[:])
	binary.BigEndian.PutUint16(frame[20:], etherTypeIPv4)
	return nil
}

func (h *vxlan) Decap(frame []byte) ([]byte, error) {
	if len(frame) < vxlanLen {
		return nil, ErrTruncated
	}
	// Like the kernel's vxlan_rcv without extensions: the I flag must be
	// set and every reserved bit clear.
	word1 := binary.BigEndian.Uint32(frame[4:])
	if binary.BigEndian.Uint32(frame[0:]) != vxlanFlagsVNI || word1&0xff != 0 {
		return nil, ErrBadVXLANFlags
	}
	if word1>>8 != h.vni {
		return nil, ErrWrongVNI
	}
	if [6]byte(frame[8:14]) != h.mac {
		return nil, ErrWrongMAC
	}
	if binary.BigEndian.Uint16(frame[20:]) != etherTypeIPv4 {
		return nil, ErrNotIPv4Ether
	}
	inner := frame[vxlanLen:]
	// The kernel sends inner frames unpadded, but a hardware VTEP may pad a
	// short one to the Ethernet minimum; trim it as the kernel's ip_rcv does.
	if len(inner) == minEtherPayload {
		if total := int(binary.BigEndian.Uint16(inner[2:])); total >= ipv4MinHeaderLen && total < len(inner) {
			inner = inner[:total]
		}
	}
	if err := validateIPv4(inner); err != nil {
		return nil, err
	}
	return inner, nil
}

func (h *vxlan) String() string {
	m := h.mac
	return fmt.Sprintf("vxlan vni %d mac %02x:%02x:%02x:%02x:%02x:%02x", h.vni, m[0], m[1], m[2], m[3], m[4], m[5])
}
