package encap

import "errors"

// Errors returned by the decoders and encoders. They are never wrapped, so
// the data path can count drops by comparing them without allocating;
// errors.Is works as well.
var (
	// ErrTruncated: the input ends before a header it must carry, or before
	// the length its IPv4 header claims (e.g. a datagram cut short by a
	// receiver with a smaller MTU).
	ErrTruncated = errors.New("encap: truncated packet")
	// ErrNotIPv4: the IP version field is not 4.
	ErrNotIPv4 = errors.New("encap: not an IPv4 packet")
	// ErrBadHeaderLen: the IPv4 header length (IHL) is below 5 words or
	// longer than the packet.
	ErrBadHeaderLen = errors.New("encap: bad IPv4 header length")
	// ErrBadTotalLen: the IPv4 total length is shorter than the bytes
	// received, i.e. the packet carries trailing bytes.
	ErrBadTotalLen = errors.New("encap: IPv4 total length disagrees with packet size")
	// ErrBadChecksum: the IPv4 header checksum does not verify.
	ErrBadChecksum = errors.New("encap: bad IPv4 header checksum")
	// ErrBadVXLANFlags: the VXLAN flags are not exactly 0x08 (VNI valid), or
	// a reserved field is not zero; the kernel drops such packets too.
	ErrBadVXLANFlags = errors.New("encap: bad VXLAN flags or reserved bits")
	// ErrWrongVNI: the VXLAN network identifier is not ours.
	ErrWrongVNI = errors.New("encap: wrong VXLAN VNI")
	// ErrWrongMAC: the inner Ethernet destination is not our VTEP MAC.
	ErrWrongMAC = errors.New("encap: inner Ethernet destination is not our VTEP MAC")
	// ErrNotIPv4Ether: the inner Ethernet frame does not carry IPv4
	// (ethertype 0x0800).
	ErrNotIPv4Ether = errors.New("encap: inner Ethernet frame is not IPv4")
	// ErrNoHeadroom: Encap was given a frame shorter than the header.
	ErrNoHeadroom = errors.New("encap: frame has no room for the header")
	// ErrVNIOutOfRange: a VNI does not fit in VXLAN's 24 bits.
	ErrVNIOutOfRange = errors.New("encap: VNI does not fit in 24 bits")
)
