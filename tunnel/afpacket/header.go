package afpacket

import (
	"encoding/binary"
	"net/netip"

	"github.com/overlayd/overlayd/encap"
)

// Every frame the socket sends or receives starts with a virtio_net_hdr
// (PACKET_VNET_HDR), which carries the kernel's checksum and segmentation
// state, then Ethernet, IPv4 and UDP. A single datagram is sent complete:
// IP options none, virtio_net_hdr zeros, both checksums computed here. A
// run of datagrams is sent as one UDP GSO super-datagram, as a UDP socket
// with UDP_SEGMENT would: the kernel (or the NIC) cuts it up and completes
// each piece's checksum where it leaves the machine; on a veth it crosses
// whole.
const (
	vnetLen = 10 // struct virtio_net_hdr
	ethLen  = 14
	ipLen   = 20 // without options
	udpLen  = 8

	// txHeaderLen is what WriteBatch puts in front of each payload.
	txHeaderLen = vnetLen + ethLen + ipLen + udpLen
	// overhead is what the underlay adds to a payload on the wire
	// (Ethernet not counted, as in an MTU).
	overhead = ipLen + udpLen

	etherTypeIPv4 = 0x0800
	protoUDP      = 17
	ipTTL         = 64
	ipDF          = 0x4000
)

// virtio_net_hdr fields (<linux/virtio_net.h>), little-endian on the
// packet socket's interface (vio_le on every modern kernel).
const (
	vnetFlags      = 0
	vnetGSOType    = 1
	vnetHdrLen     = 2
	vnetGSOSize    = 4
	vnetCsumStart  = 6
	vnetCsumOffset = 8

	vnetNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
	vnetGSONone   = 0
	vnetGSOTCPv4  = 1
	vnetGSOTCPv6  = 4
	vnetGSOUDPL4  = 5
	vnetGSOECN    = 0x80
)

// header writes the headers of the frames one Conn sends. Everything but
// the destination and the lengths is fixed when the Conn opens.
type header struct {
	tmpl [txHeaderLen]byte
	src  netip.Addr
}

func newHeader(srcMAC [6]byte, src netip.AddrPort) *header {
	h := &header{src: src.Addr()}
	b := h.tmpl[vnetLen:]
	copy(b[6:12], srcMAC[:])
	binary.BigEndian.PutUint16(b[12:], etherTypeIPv4)
	ip := b[ethLen:]
	ip[0] = 0x45 // version 4, 5 words
	binary.BigEndian.PutUint16(ip[6:], ipDF)
	ip[8] = ipTTL
	ip[9] = protoUDP
	a := src.Addr().As4()
	copy(ip[12:16], a[:])
	binary.BigEndian.PutUint16(ip[ipLen:], src.Port())
	return h
}

// write fills b, txHeaderLen bytes, with the headers of payload sent to
// dst (IPv4) through the next hop at dstMAC, with IP identification id.
// It computes both checksums in full: a receiver may verify them.
func (h *header) write(b []byte, dstMAC [6]byte, dst netip.AddrPort, payload []byte, id uint16) {
	b = b[:txHeaderLen]
	copy(b, h.tmpl[:])
	eth := b[vnetLen:]
	copy(eth[0:6], dstMAC[:])

	ip := eth[ethLen : ethLen+ipLen]
	binary.BigEndian.PutUint16(ip[2:], uint16(ipLen+udpLen+len(payload)))
	binary.BigEndian.PutUint16(ip[4:], id)
	d := dst.Addr().As4()
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:], ^encap.Checksum(ip, 0))

	udp := eth[ethLen+ipLen:]
	ulen := udpLen + len(payload)
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(ulen))
	sum := encap.PseudoHeaderSum(h.src, dst.Addr(), protoUDP, ulen)
	sum = uint32(encap.Checksum(udp, sum))
	csum := ^encap.Checksum(payload, sum)
	if csum == 0 {
		csum = 0xffff // 0 would mean no checksum (RFC 768)
	}
	binary.BigEndian.PutUint16(udp[6:], csum)
}

// writeGSO fills b, txHeaderLen bytes, with the headers of a UDP GSO
// super-datagram of total payload bytes, cut into segment-byte datagrams
// by the kernel: IP identification id for the first, the next ids for the
// others. The UDP checksum field holds the pseudo-header sum that
// VIRTIO_NET_HDR_F_NEEDS_CSUM asks for.
func (h *header) writeGSO(b []byte, dstMAC [6]byte, dst netip.AddrPort, total, segment int, id uint16) {
	b = b[:txHeaderLen]
	copy(b, h.tmpl[:])
	v := b[:vnetLen]
	v[vnetFlags] = vnetNeedsCsum
	v[vnetGSOType] = vnetGSOUDPL4
	binary.LittleEndian.PutUint16(v[vnetHdrLen:], ethLen+ipLen+udpLen)
	binary.LittleEndian.PutUint16(v[vnetGSOSize:], uint16(segment))
	binary.LittleEndian.PutUint16(v[vnetCsumStart:], ethLen+ipLen)
	binary.LittleEndian.PutUint16(v[vnetCsumOffset:], 6)

	eth := b[vnetLen:]
	copy(eth[0:6], dstMAC[:])
	ip := eth[ethLen : ethLen+ipLen]
	binary.BigEndian.PutUint16(ip[2:], uint16(ipLen+udpLen+total))
	binary.BigEndian.PutUint16(ip[4:], id)
	d := dst.Addr().As4()
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:], ^encap.Checksum(ip, 0))

	udp := eth[ethLen+ipLen:]
	ulen := udpLen + total
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(ulen))
	binary.BigEndian.PutUint16(udp[6:], uint16(encap.PseudoHeaderSum(h.src, dst.Addr(), protoUDP, ulen)))
}

// dropReason says why a received frame was not delivered.
type dropReason uint8

const (
	delivered dropReason = iota
	dropMalformed
	dropChecksum
	dropTruncated
	dropNotOurs // passed the filter, yet not for laddr: a filter bug
)

// Kernel frame status bits (tp_status) that parse uses.
const (
	tpStatusCsumNotReady = 0x8  // TP_STATUS_CSUMNOTREADY: checksum to be done (local, offloaded)
	tpStatusCsumValid    = 0x80 // TP_STATUS_CSUM_VALID: the driver verified it
)

// datagram is a UDP datagram found in a received frame.
type datagram struct {
	payload []byte // the UDP payload, a subslice of the frame
	src     netip.AddrPort
	// segment is the size the payload is cut into when the frame is a
	// UDP GSO super-datagram (sent by a socket with UDP_SEGMENT on this
	// machine, or coalesced by GRO): 0 for a single datagram, a kernel
	// VTEP's super-frame among them.
	segment int
}

// parse validates a frame captured by the ring: vnet is its
// virtio_net_hdr, frame its captured bytes from the Ethernet header on,
// wireLen its full length, status its TP_STATUS_* bits. It checks what the
// kernel's IPv4 and UDP receive paths would (header, lengths, checksums
// unless the kernel vouches for them) and that the datagram is laddr's.
// It copies nothing and allocates nothing.
func parse(vnet, frame []byte, wireLen int, status uint32, laddr netip.AddrPort) (datagram, dropReason) {
	if wireLen > len(frame) {
		return datagram{}, dropTruncated
	}
	if len(vnet) != vnetLen || len(frame) < ethLen+ipLen+udpLen ||
		binary.BigEndian.Uint16(frame[offEtherType:]) != etherTypeIPv4 {
		return datagram{}, dropMalformed
	}
	ip := frame[ethLen:]
	ihl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:]))
	if ip[0]>>4 != 4 || ihl < ipLen || total < ihl+udpLen || total > len(ip) {
		return datagram{}, dropMalformed
	}
	ip = ip[:total] // past total is Ethernet padding
	if ip[9] != protoUDP || binary.BigEndian.Uint16(ip[6:])&(ipMF|ipOffsetMask) != 0 ||
		[4]byte(ip[16:20]) != laddr.Addr().As4() {
		return datagram{}, dropNotOurs
	}
	if encap.Checksum(ip[:ihl], 0) != 0xffff {
		return datagram{}, dropChecksum
	}
	udp := ip[ihl:]
	if binary.BigEndian.Uint16(udp[2:]) != laddr.Port() {
		return datagram{}, dropNotOurs
	}
	ulen := int(binary.BigEndian.Uint16(udp[4:]))
	if ulen < udpLen || ulen > len(udp) {
		return datagram{}, dropMalformed
	}
	udp = udp[:ulen] // the kernel trims an IP payload longer than the UDP length too
	src := netip.AddrFrom4([4]byte(ip[12:16]))
	csum := binary.BigEndian.Uint16(udp[6:])
	if csum != 0 && status&(tpStatusCsumValid|tpStatusCsumNotReady) == 0 {
		sum := encap.PseudoHeaderSum(src, laddr.Addr(), protoUDP, ulen)
		if encap.Checksum(udp, sum) != 0xffff {
			return datagram{}, dropChecksum
		}
	}
	d := datagram{payload: udp[udpLen:], src: netip.AddrPortFrom(src, binary.BigEndian.Uint16(udp[0:]))}
	switch vnet[vnetGSOType] &^ vnetGSOECN {
	case vnetGSONone:
	case vnetGSOUDPL4:
		d.segment = int(binary.LittleEndian.Uint16(vnet[vnetGSOSize:]))
		if d.segment == 0 {
			return datagram{}, dropMalformed
		}
	case vnetGSOTCPv4, vnetGSOTCPv6:
		// A kernel VTEP's super-frame (UDP tunnel GSO over TCP): the
		// header describes the inner TCP segments, and the datagram is
		// one, carrying a TCP super-packet that the TUN cuts.
	default: // UFO, or unknown
		return datagram{}, dropMalformed
	}
	return d, delivered
}
