package encap

import (
	"encoding/binary"
	"net/netip"
)

// ICMP errors (RFC 792, RFC 1191) that the forwarder writes back into the
// TUN, the way a router answers what it cannot forward.
const (
	// MaxICMPErrorLen is the largest error FragNeeded and NetUnreachable
	// write, and the smallest dst they accept: IPv4 and ICMP headers, the
	// original header with options, and 8 bytes of its payload.
	MaxICMPErrorLen = 20 + 8 + 60 + 8

	icmpHeaderLen     = 8
	icmpQuotedPayload = 8
	icmpErrorTTL      = 64
	protoICMP         = 1

	icmpTypeDestUnreachable = 3
	icmpCodeNetUnreachable  = 0
	icmpCodeFragNeeded      = 4
	icmpMaxKnownType        = 18 // NR_ICMP_TYPES in Linux
)

// FragNeeded writes into dst an ICMP "fragmentation needed and DF set"
// (type 3 code 4) answering orig, from the address from, with the next-hop
// MTU field set to mtu (68..65535). It returns the length written, or 0 if
// no error may be sent (see NetUnreachable).
func FragNeeded(dst, orig []byte, from netip.Addr, mtu int) int {
	if mtu < 68 || mtu > 0xffff {
		return 0
	}
	return icmpError(dst, orig, from, icmpCodeFragNeeded, uint16(mtu))
}

// NetUnreachable writes into dst an ICMP "net unreachable" (type 3 code 0)
// answering orig, from the address from. It returns the length written,
// or 0 if no error may be sent: dst shorter than MaxICMPErrorLen, from not
// an IPv4 (or IPv4-mapped) address, orig not a valid IPv4 packet, or orig
// one that RFC 1122 §3.2.2 says never to answer (an ICMP error, a
// non-first fragment, a broadcast or multicast destination, a source that
// is not a single host).
//
// The error goes to orig's source with TTL 64 and DF clear, and quotes
// orig's IP header and the first 8 bytes of its payload.
func NetUnreachable(dst, orig []byte, from netip.Addr) int {
	return icmpError(dst, orig, from, icmpCodeNetUnreachable, 0)
}

func icmpError(dst, orig []byte, from netip.Addr, code uint8, mtu uint16) int {
	from = from.Unmap()
	if len(dst) < MaxICMPErrorLen || !from.Is4() || validateIPv4(orig) != nil || !mayAnswer(orig) {
		return 0
	}
	quoted := min(len(orig), int(orig[0]&0x0f)*4+icmpQuotedPayload)
	n := ipv4MinHeaderLen + icmpHeaderLen + quoted

	ip := dst[:ipv4MinHeaderLen]
	ip[0] = 0x45
	// As Linux's icmp_send: precedence "internetwork control", keeping the
	// original's TOS bits.
	ip[1] = 0xc0 | orig[1]&0x1e
	binary.BigEndian.PutUint16(ip[2:], uint16(n))
	// DF is clear, so the datagram needs an ID; reusing the original's is
	// as unique as the sender made it, and needs no shared counter.
	copy(ip[4:6], orig[4:6])
	ip[6], ip[7] = 0, 0
	ip[ipv4OffTTL] = icmpErrorTTL
	ip[9] = protoICMP
	ip[ipv4OffChecksum], ip[ipv4OffChecksum+1] = 0, 0
	from4 := from.As4()
	copy(ip[ipv4OffSrc:], from4[:])
	copy(ip[ipv4OffDst:ipv4OffDst+4], orig[ipv4OffSrc:ipv4OffSrc+4])
	binary.BigEndian.PutUint16(ip[ipv4OffChecksum:], ^Checksum(ip, 0))

	msg := dst[ipv4MinHeaderLen:n]
	msg[0] = icmpTypeDestUnreachable
	msg[1] = code
	msg[2], msg[3], msg[4], msg[5] = 0, 0, 0, 0
	binary.BigEndian.PutUint16(msg[6:], mtu)
	copy(msg[icmpHeaderLen:], orig[:quoted])
	binary.BigEndian.PutUint16(msg[2:], ^Checksum(msg, 0))
	return n
}

// mayAnswer reports whether RFC 1122 §3.2.2 allows an ICMP error about the
// valid IPv4 packet pkt.
func mayAnswer(pkt []byte) bool {
	if binary.BigEndian.Uint16(pkt[6:])&ipv4FragOffMask != 0 {
		return false // non-first fragment
	}
	switch src := pkt[ipv4OffSrc]; {
	case src == 0, src == 127, src >= 224:
		return false // "this network", loopback, multicast, class E and broadcast
	}
	if pkt[ipv4OffDst] >= 224 {
		return false // multicast, class E and broadcast
	}
	if pkt[9] == protoICMP {
		ihl := int(pkt[0]&0x0f) * 4
		if len(pkt) <= ihl {
			return false // cannot tell what it is
		}
		// As Linux: anything unknown is treated as an error too.
		switch t := pkt[ihl]; {
		case t > icmpMaxKnownType, t == 3, t == 4, t == 5, t == 11, t == 12:
			return false
		}
	}
	return true
}
