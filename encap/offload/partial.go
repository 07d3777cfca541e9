package offload

import "github.com/overlayd/overlayd/encap"

// Partial checksums: a TCP or UDP checksum field that holds the
// pseudo-header sum, not complemented, for someone further on to finish,
// as the kernel leaves it for a device that checksums (CHECKSUM_PARTIAL).
// SplitOptions.PartialChecksums leaves checksums so; CompleteChecksum
// finishes them.

// CompleteChecksum finishes the partial TCP or UDP checksum of the IPv4 or
// IPv6 packet pkt: it sums the transport header and payload, starting
// from the pseudo-header sum the checksum field holds, in one pass, and
// writes the complement into the field. A checksum that comes out 0 is
// written 0xffff, its other form, as the kernel does: for UDP, 0 would
// mean none. It does not allocate.
//
// pkt must be the whole packet. One without a whole TCP or UDP header right
// behind its IP header (and IPv6 options), or an IPv4 fragment, gives
// ErrNoTransportChecksum, and is left as it is.
func CompleteChecksum(pkt []byte) error {
	l4Off, csumOff, ok := transportChecksum(pkt)
	if !ok {
		return ErrNoTransportChecksum
	}
	l4 := pkt[l4Off:]
	finishChecksum(l4[csumOff:], encap.Checksum(l4, 0))
	return nil
}

// transportChecksum finds the TCP or UDP checksum of the IPv4 or IPv6
// packet pkt: where its transport header starts, and where the checksum
// field is from there. ok is false for anything else: no whole TCP or UDP
// header behind the IP header and IPv6 options, or an IPv4 fragment (an
// IPv6 one shows as its fragment header), whose checksum covers more than
// the packet.
func transportChecksum(pkt []byte) (l4Off, csumOff int, ok bool) {
	var proto uint8
	switch {
	case len(pkt) >= ipv4MinHeaderLen && pkt[0]>>4 == 4:
		l4Off, proto = int(pkt[0]&0x0f)*4, pkt[ipv4OffProto]
		if l4Off < ipv4MinHeaderLen || isIPv4Fragment(pkt) {
			return 0, 0, false
		}
	case len(pkt) >= ipv6HeaderLen && pkt[0]>>4 == 6:
		l4Off, proto = ipv6Transport(pkt)
	default:
		return 0, 0, false
	}
	var hdrLen int
	switch proto {
	case protoTCP:
		csumOff, hdrLen = tcpOffChecksum, tcpMinHeaderLen
	case protoUDP:
		csumOff, hdrLen = udpOffChecksum, udpHeaderLen
	default:
		return 0, 0, false
	}
	if l4Off+hdrLen > len(pkt) {
		return 0, 0, false
	}
	return l4Off, csumOff, true
}

// isTransportChecksum reports whether the checksum a virtio-net header
// places at csumStart+csumOffset is the one transportChecksum finds: the
// only one CompleteChecksum can finish later.
func isTransportChecksum(pkt []byte, csumStart, csumOffset int) bool {
	l4Off, csumOff, ok := transportChecksum(pkt)
	return ok && csumStart == l4Off && csumOffset == csumOff
}
