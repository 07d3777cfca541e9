package encap

import (
	"encoding/binary"
	"net/netip"
)

// IPv4 header layout, RFC 791.
const (
	ipv4MinHeaderLen = 20
	ipv4FlagDF       = 0x40 // in byte 6
	ipv4FragOffMask  = 0x1fff
	ipv4OffTTL       = 8
	ipv4OffChecksum  = 10
	ipv4OffSrc       = 12
	ipv4OffDst       = 16
)

// ParseIPv4 validates an IPv4 packet as received from the underlay or read
// from a TUN, and returns its source and destination addresses. The packet
// must be exactly as long as its total length field says: trailing bytes
// are as malformed as missing ones. It does not allocate.
func ParseIPv4(pkt []byte) (src, dst netip.Addr, err error) {
	if err := validateIPv4(pkt); err != nil {
		return netip.Addr{}, netip.Addr{}, err
	}
	return netip.AddrFrom4([4]byte(pkt[ipv4OffSrc:])), netip.AddrFrom4([4]byte(pkt[ipv4OffDst:])), nil
}

func validateIPv4(pkt []byte) error {
	if len(pkt) < ipv4MinHeaderLen {
		return ErrTruncated
	}
	if pkt[0]>>4 != 4 {
		return ErrNotIPv4
	}
	ihl := int(pkt[0]&0x0f) * 4
	if ihl < ipv4MinHeaderLen {
		return ErrBadHeaderLen
	}
	switch total := int(binary.BigEndian.Uint16(pkt[2:])); {
	case total > len(pkt):
		return ErrTruncated
	case total < len(pkt):
		return ErrBadTotalLen
	}
	if ihl > len(pkt) {
		return ErrBadHeaderLen
	}
	if Checksum(pkt[:ihl], 0) != 0xffff {
		return ErrBadChecksum
	}
	return nil
}

// IPv4Dst returns the destination of what looks like an IPv4 packet,
// checking only the version and that the fixed header is there: the cheap
// lookup key of the transmit path. ok is false otherwise.
func IPv4Dst(pkt []byte) (dst netip.Addr, ok bool) {
	if len(pkt) < ipv4MinHeaderLen || pkt[0]>>4 != 4 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(pkt[ipv4OffDst:])), true
}

// IPv4DF reports whether the Don't Fragment bit is set. It is false for a
// packet too short to carry the flags.
func IPv4DF(pkt []byte) bool {
	return len(pkt) >= ipv4MinHeaderLen && pkt[6]&ipv4FlagDF != 0
}

// DecTTL decrements the TTL of a validated IPv4 packet and patches the
// header checksum incrementally (RFC 1624, eqn. 3), as a router does and
// as flanneld does in both directions. It returns false, leaving the packet
// untouched, if the TTL would reach zero: the packet must then be dropped.
func DecTTL(pkt []byte) bool {
	if len(pkt) < ipv4MinHeaderLen || pkt[ipv4OffTTL] <= 1 {
		return false
	}
	// The TTL is the high byte of the 16-bit word it shares with the
	// protocol: HC' = ~(~HC + ~m + m').
	old := uint64(binary.BigEndian.Uint16(pkt[ipv4OffTTL:]))
	pkt[ipv4OffTTL]--
	s := uint64(^binary.BigEndian.Uint16(pkt[ipv4OffChecksum:])) + (^old & 0xffff) + (old - 0x0100)
	binary.BigEndian.PutUint16(pkt[ipv4OffChecksum:], ^Fold(s))
	return true
}
