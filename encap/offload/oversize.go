package offload

import "encoding/binary"

// Super-frames on the wire. A kernel VXLAN device that sends over a veth
// whose TX offloads are on (hosts emulated as containers on one machine,
// as kind runs them) hands the veth a TCP super-packet with the VXLAN
// headers in front, and the veth carries it to the next namespace whole:
// one datagram of up to 64 KiB, whose inner packet has a TCP checksum left
// partial and no trace of its segment size (a socket reads no virtio-net
// header). Written into a TUN as it is, such a packet is too big for the
// next link, and the kernel drops it there (IpFragFails: TCP sets DF).
// SuperPacketHdr describes it as the super-packet it was, for the kernel
// or SplitGSO to cut at the receiving TUN's MTU.

// tcpFlagsSegmentable are the TCP flags a segmented packet may carry: what
// TSO itself sends. SYN and RST would be copied into every segment, and an
// urgent pointer would point into the wrong one.
const tcpFlagsSegmentable = tcpFlagACK | tcpFlagPSH | tcpFlagFIN | tcpFlagCWR | 0x40 // ECE

// SuperPacketHdr returns the virtio-net header that makes pkt, a whole
// IPv4 or IPv6 TCP packet longer than mtu, a TCP super-packet (GSOTCPv4 or
// GSOTCPv6, VirtioNeedsCsum) of segments of at most mtu bytes each: MSS
// mtu less pkt's IP and TCP headers, options included. The header is
// what the kernel's TSO would have described pkt with, had it kept pkt on
// this machine: written into a TUN with it, pkt is cut at mtu wherever it
// goes on (with its checksum field set to the pseudo-header sum, as
// Coalesce sets it), and SplitGSO and SplitGSOHead cut it the same way.
//
// ok is false when pkt is no longer than mtu, or cannot be so cut: not TCP,
// an IPv4 fragment, IPv6 extension headers other than options, lengths
// that disagree with len(pkt), SYN, RST or URG set, or headers that leave
// no room for payload within mtu. It reads pkt only, and allocates
// nothing.
func SuperPacketHdr(pkt []byte, mtu int) (h VirtioNetHdr, ok bool) {
	if len(pkt) <= mtu {
		return h, false
	}
	var l4Off int
	switch {
	case len(pkt) >= ipv4MinHeaderLen && pkt[0]>>4 == 4:
		l4Off = int(pkt[0]&0x0f) * 4
		if l4Off < ipv4MinHeaderLen || pkt[ipv4OffProto] != protoTCP || isIPv4Fragment(pkt) ||
			int(binary.BigEndian.Uint16(pkt[ipv4OffTotalLen:])) != len(pkt) {
			return h, false
		}
		h.GSOType = GSOTCPv4
	case len(pkt) >= ipv6HeaderLen && pkt[0]>>4 == 6:
		var proto uint8
		if l4Off, proto = ipv6Transport(pkt); proto != protoTCP ||
			int(binary.BigEndian.Uint16(pkt[ipv6OffPayloadLen:])) != len(pkt)-ipv6HeaderLen {
			return h, false
		}
		h.GSOType = GSOTCPv6
	default:
		return h, false
	}
	if l4Off+tcpMinHeaderLen > len(pkt) {
		return h, false
	}
	th := pkt[l4Off:]
	hdrLen := l4Off + int(th[tcpOffDataOff]>>4)*4
	if hdrLen < l4Off+tcpMinHeaderLen || hdrLen >= len(pkt) || hdrLen >= mtu ||
		th[tcpOffFlags]&^tcpFlagsSegmentable != 0 {
		return h, false
	}
	h.Flags = VirtioNeedsCsum
	h.HdrLen = uint16(hdrLen)
	h.GSOSize = uint16(mtu - hdrLen)
	h.CsumStart = uint16(l4Off)
	h.CsumOffset = tcpOffChecksum
	return h, true
}
