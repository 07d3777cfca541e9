package offload

import (
	"encoding/binary"

	"github.com/overlayd/overlayd/encap"
)

// The offload transforms (gso.go, gro.go, partial.go) work on IPv4 and
// IPv6 packets carrying TCP or UDP, at the fixed offsets below.
const (
	ipv4MinHeaderLen = 20
	ipv4OffTotalLen  = 2
	ipv4OffID        = 4
	ipv4OffFlags     = 6 // flags and fragment offset, 16 bits
	ipv4OffTTL       = 8
	ipv4OffProto     = 9
	ipv4OffChecksum  = 10
	ipv4OffSrc       = 12
	ipv4OffDst       = 16
	ipv4FlagDF       = 0x40 // in byte 6
	ipv4FlagMF       = 0x20 // in byte 6
	ipv4FragOffMask  = 0x1fff

	ipv6HeaderLen     = 40
	ipv6OffPayloadLen = 4
	ipv6OffNextHeader = 6
	ipv6OffHopLimit   = 7
	ipv6OffSrc        = 8

	protoTCP = 6
	protoUDP = 17

	tcpMinHeaderLen = 20
	tcpMaxHeaderLen = 60
	tcpOffSeq       = 4
	tcpOffAck       = 8
	tcpOffDataOff   = 12
	tcpOffFlags     = 13
	tcpOffWindow    = 14
	tcpOffChecksum  = 16

	tcpFlagFIN = 0x01
	tcpFlagSYN = 0x02
	tcpFlagRST = 0x04
	tcpFlagPSH = 0x08
	tcpFlagACK = 0x10
	tcpFlagCWR = 0x80

	udpHeaderLen   = 8
	udpOffLength   = 4
	udpOffChecksum = 6

	// maxIPPacket bounds every packet built here: the IPv4 total length
	// field, and the buffers callers size for one packet.
	maxIPPacket = 65535
)

// addrSum returns the ones' complement sum of pkt's source and destination
// addresses plus proto: the part of the TCP/UDP pseudo-header that is the
// same for every segment of a flow. Adding the transport length and
// folding gives the whole pseudo-header sum.
func addrSum(pkt []byte, v6 bool, proto uint8) uint64 {
	if v6 {
		return uint64(encap.Checksum(pkt[ipv6OffSrc:ipv6HeaderLen], uint32(proto)))
	}
	return uint64(encap.Checksum(pkt[ipv4OffSrc:ipv4OffDst+4], uint32(proto)))
}

// finishChecksum writes the complement of sum as the checksum at b. A
// result of 0 is written as 0xffff, its other representation, as the
// kernel does (for UDP a zero would mean "no checksum").
func finishChecksum(b []byte, sum uint16) {
	c := ^sum
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(b, c)
}

// setIPv4Checksum recomputes the checksum of the IPv4 header at the start
// of pkt, ihl bytes long.
func setIPv4Checksum(pkt []byte, ihl int) {
	pkt[ipv4OffChecksum], pkt[ipv4OffChecksum+1] = 0, 0
	binary.BigEndian.PutUint16(pkt[ipv4OffChecksum:], ^encap.Checksum(pkt[:ihl], 0))
}

// ipv4SumFixed returns the ones' complement sum of the IPv4 header hdr
// without its total length, identification and checksum: what the headers
// of one super-packet's segments share. Adding a segment's length and
// identification gives its header's sum, without reading back the header
// just written, as the kernel's GSO updates its segments' checksums.
func ipv4SumFixed(hdr []byte) uint64 {
	s := encap.Checksum(hdr[ipv4OffSrc:], 0)                         // addresses, options
	s = encap.Checksum(hdr[ipv4OffFlags:ipv4OffChecksum], uint32(s)) // fragment, TTL, protocol
	return uint64(encap.Checksum(hdr[:ipv4OffTotalLen], uint32(s)))  // version, IHL, TOS
}

// isIPv4Fragment reports whether the IPv4 packet is a fragment: MF set or
// a non-zero fragment offset.
func isIPv4Fragment(pkt []byte) bool {
	return binary.BigEndian.Uint16(pkt[ipv4OffFlags:])&(ipv4FragOffMask|ipv4FlagMF<<8) != 0
}
