package offload

import (
	"encoding/binary"

	"github.com/overlayd/overlayd/encap"
)

// VirtioNetHdrLen is the size of the virtio-net header (struct
// virtio_net_hdr) that a TUN opened with IFF_VNET_HDR puts in front of
// every packet, in both directions.
const VirtioNetHdrLen = 10

// Flags of a virtio-net header (VIRTIO_NET_HDR_F_*).
const (
	// VirtioNeedsCsum: the L4 checksum is not done. The checksum field,
	// CsumOffset bytes after CsumStart, holds the pseudo-header sum (not
	// complemented), and the sum from CsumStart to the end completes it.
	// The kernel calls such a packet CHECKSUM_PARTIAL.
	VirtioNeedsCsum uint8 = 1
	// VirtioDataValid: the checksum was already verified.
	VirtioDataValid uint8 = 2
)

// GSO types of a virtio-net header (VIRTIO_NET_HDR_GSO_*).
const (
	GSONone  uint8 = 0    // a single packet
	GSOTCPv4 uint8 = 1    // a TCP/IPv4 super-packet (TSO)
	GSOUDP   uint8 = 3    // UDP fragmentation offload (UFO); never negotiated here
	GSOTCPv6 uint8 = 4    // a TCP/IPv6 super-packet
	GSOUDPL4 uint8 = 5    // a UDP super-packet cut into datagrams (USO, Linux 6.2+)
	GSOECN   uint8 = 0x80 // flag: the TCP stream uses ECN (CWR handling); never negotiated here
)

// VirtioNetHdr is the virtio-net header (struct virtio_net_hdr, without
// num_buffers). A TUN uses the host's byte order for it (the legacy
// virtio convention), so it is encoded in native endianness.
type VirtioNetHdr struct {
	Flags   uint8 // VirtioNeedsCsum, VirtioDataValid
	GSOType uint8 // GSONone, GSOTCPv4, ...
	// HdrLen is the length of the headers in front of the payload. From
	// the kernel it is only a hint (the linear part of the buffer), which
	// is why SplitGSO parses the headers instead.
	HdrLen     uint16
	GSOSize    uint16 // payload bytes per segment (the MSS for TCP)
	CsumStart  uint16 // where the checksummed region starts: the L4 header
	CsumOffset uint16 // where the checksum field is, from CsumStart
}

// Decode reads the header from the first VirtioNetHdrLen bytes of b.
func (h *VirtioNetHdr) Decode(b []byte) error {
	if len(b) < VirtioNetHdrLen {
		return encap.ErrTruncated
	}
	h.Flags = b[0]
	h.GSOType = b[1]
	h.HdrLen = binary.NativeEndian.Uint16(b[2:])
	h.GSOSize = binary.NativeEndian.Uint16(b[4:])
	h.CsumStart = binary.NativeEndian.Uint16(b[6:])
	h.CsumOffset = binary.NativeEndian.Uint16(b[8:])
	return nil
}

// Encode writes the header into the first VirtioNetHdrLen bytes of b.
func (h *VirtioNetHdr) Encode(b []byte) error {
	if len(b) < VirtioNetHdrLen {
		return encap.ErrNoHeadroom
	}
	b[0] = h.Flags
	b[1] = h.GSOType
	binary.NativeEndian.PutUint16(b[2:], h.HdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.GSOSize)
	binary.NativeEndian.PutUint16(b[6:], h.CsumStart)
	binary.NativeEndian.PutUint16(b[8:], h.CsumOffset)
	return nil
}
