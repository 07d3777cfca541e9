package offload

import (
	"encoding/binary"
	"io"

	"github.com/overlayd/overlayd/encap"
)

// SplitOptions say how SplitGSO and SplitGSOHead finish the packets they
// write. The zero value completes every checksum.
type SplitOptions struct {
	// PartialChecksums leaves the TCP or UDP checksum that the kernel left
	// to do (VirtioNeedsCsum) partial in every packet written: its field
	// holds the pseudo-header sum over the packet's own transport length,
	// not complemented, as the kernel leaves it for a device that finishes
	// checksums itself (CHECKSUM_PARTIAL). It saves a pass over every
	// payload byte where the receiver never looks at the checksum: an
	// overlayd whose TUN marks what it writes VirtioNeedsCsum (Coalesce).
	// CompleteChecksum finishes such a packet for any other receiver.
	//
	// Only a checksum in the transport header right behind the IP header
	// (and IPv6 options) is left partial, the one CompleteChecksum finds;
	// another one (a tunnel's inner header) is completed all the same.
	PartialChecksums bool
}

// SplitGSO turns what a TUN with IFF_VNET_HDR handed over (pkt, the bytes
// after the virtio-net header h) into packets that can go on the wire, as
// the kernel's GSO would: segment i into out[i][offset:], its length into
// sizes[i]. It returns how many it wrote, and whether their TCP or UDP
// checksums are left partial (see SplitOptions).
//
//   - A TCP super-packet (GSOTCPv4, GSOTCPv6) becomes segments of
//     h.GSOSize payload bytes. Each gets its own IPv4 total length, ID (the
//     first one's plus i) and header checksum, or IPv6 payload length; its
//     TCP sequence number moves on by the payload before it; FIN and PSH
//     stay on the last segment only, CWR on the first only.
//   - A UDP super-packet (GSOUDPL4) becomes datagrams of h.GSOSize payload
//     bytes, each with its own UDP length.
//   - Either way every segment leaves with a complete TCP/UDP checksum, so
//     that a receiver that verifies it (a flanneld peer's kernel) accepts
//     it. Each segment is summed once, in the buffer it was copied to; the
//     pseudo-header's addresses are summed once per super-packet. With
//     opts.PartialChecksums, every segment's checksum is left partial
//     instead, and no payload byte is summed.
//   - A single packet with VirtioNeedsCsum gets its checksum completed
//     (from h.CsumStart to the end, into h.CsumStart+h.CsumOffset), or,
//     with opts.PartialChecksums, left partial if it is the TCP or UDP
//     checksum of the packet's own transport header.
//   - Any other packet is copied as it is.
//
// If pkt holds more segments than len(out) (or len(sizes)), nothing is
// written and the error is ErrTooManySegments: keep pkt and call again with
// more buffers, or use SplitGSOHead. A header that disagrees with the
// packet gives ErrGSOType, ErrVirtioHdr or ErrTruncated, and a segment too
// long for its buffer io.ErrShortBuffer: drop and count the packet. pkt's
// bytes are not modified. SplitGSO does not allocate.
func SplitGSO(pkt []byte, h VirtioNetHdr, out [][]byte, sizes []int, offset int, opts SplitOptions) (n int, partial bool, err error) {
	if h.GSOType == GSONone {
		return copySingle(pkt, &h, out, sizes, offset, opts)
	}
	l, err := parseGSO(pkt, &h)
	if err != nil {
		return 0, false, err
	}
	if l.segs > len(out) || l.segs > len(sizes) {
		return 0, false, ErrTooManySegments
	}
	if !l.fits(len(pkt), out, l.segs, offset) {
		return 0, false, io.ErrShortBuffer
	}
	l.split(pkt, out, sizes, offset, l.segs, true, opts.PartialChecksums)
	return l.segs, opts.PartialChecksums, nil
}

// SplitGSOHead is SplitGSO for a caller that may never have buffers enough
// for pkt (a small MTU makes for many segments): when pkt holds more
// segments than out has buffers, it writes the first len(out) of them and
// turns the rest, in place at the end of pkt, into a super-packet of its
// own that carries on where they stop (TCP sequence number, IPv4 ID,
// lengths). rest is that super-packet, described by *h, which SplitGSOHead
// updates; it is nil when all of pkt was written. Unlike SplitGSO it
// modifies pkt when it returns a rest.
func SplitGSOHead(pkt []byte, h *VirtioNetHdr, out [][]byte, sizes []int, offset int, opts SplitOptions) (n int, rest []byte, partial bool, err error) {
	if h.GSOType == GSONone {
		n, partial, err = copySingle(pkt, h, out, sizes, offset, opts)
		return n, nil, partial, err
	}
	l, err := parseGSO(pkt, h)
	if err != nil {
		return 0, nil, false, err
	}
	n = min(l.segs, len(out), len(sizes))
	if n == 0 {
		return 0, nil, false, ErrTooManySegments
	}
	if !l.fits(len(pkt), out, n, offset) {
		return 0, nil, false, io.ErrShortBuffer
	}
	final := n == l.segs
	l.split(pkt, out, sizes, offset, n, final, opts.PartialChecksums)
	if final {
		return n, nil, opts.PartialChecksums, nil
	}
	rest = l.advance(pkt, n)
	h.HdrLen = uint16(l.hdrLen)
	return n, rest, opts.PartialChecksums, nil
}

// copySingle handles a packet that is not a super-packet: a copy into
// out[0], with its checksum completed if the kernel left it partial,
// unless opts lets it stay so.
func copySingle(pkt []byte, h *VirtioNetHdr, out [][]byte, sizes []int, offset int, opts SplitOptions) (n int, partial bool, err error) {
	var csumStart, csumAt int
	needsCsum := h.Flags&VirtioNeedsCsum != 0
	if needsCsum {
		ipLen, ok := ipHeaderLen(pkt)
		csumStart, csumAt = int(h.CsumStart), int(h.CsumStart)+int(h.CsumOffset)
		if !ok || csumStart < ipLen || csumAt+2 > len(pkt) {
			return 0, false, ErrVirtioHdr
		}
		partial = opts.PartialChecksums && isTransportChecksum(pkt, csumStart, int(h.CsumOffset))
	}
	if len(out) == 0 || len(sizes) == 0 {
		return 0, false, ErrTooManySegments
	}
	if len(out[0]) < offset || len(out[0])-offset < len(pkt) {
		return 0, false, io.ErrShortBuffer
	}
	p := out[0][offset : offset+len(pkt)]
	copy(p, pkt)
	if needsCsum && !partial {
		// The checksum field holds the pseudo-header sum: summing it with
		// the rest gives the whole sum.
		finishChecksum(p[csumAt:], encap.Checksum(p[csumStart:], 0))
	}
	sizes[0] = len(p)
	return 1, partial, nil
}

// ipHeaderLen returns the length of the fixed IP header of what looks like
// an IPv4 or IPv6 packet.
func ipHeaderLen(pkt []byte) (int, bool) {
	switch {
	case len(pkt) >= ipv4MinHeaderLen && pkt[0]>>4 == 4:
		ihl := int(pkt[0]&0x0f) * 4
		return ihl, ihl >= ipv4MinHeaderLen && ihl <= len(pkt)
	case len(pkt) >= ipv6HeaderLen && pkt[0]>>4 == 6:
		return ipv6HeaderLen, true
	}
	return 0, false
}

// ipv6Transport walks the extension headers of an IPv6 packet and returns
// where the header that follows them starts and its protocol number. It
// passes hop-by-hop and destination options only: a fragment is no
// super-packet, and a routing header would change the pseudo-header's
// destination; their protocol numbers are returned instead.
func ipv6Transport(pkt []byte) (off int, proto uint8) {
	off, proto = ipv6HeaderLen, pkt[ipv6OffNextHeader]
	for (proto == 0 || proto == 60) && len(pkt) >= off+8 {
		proto, off = pkt[off], off+(int(pkt[off+1])+1)*8
	}
	return off, proto
}

// gsoLayout is the shape of a super-packet, read from its headers.
type gsoLayout struct {
	v6      bool
	proto   uint8
	l4Off   int // start of the TCP/UDP header (h.CsumStart)
	hdrLen  int // all headers: l4Off plus the TCP/UDP header
	gsoSize int
	segs    int
}

// parseGSO checks h against pkt, following the kernel's rules for
// virtio-net headers (virtio_net_hdr_to_skb), and lays pkt out.
func parseGSO(pkt []byte, h *VirtioNetHdr) (gsoLayout, error) {
	var l gsoLayout
	switch h.GSOType {
	case GSOTCPv4, GSOTCPv6:
		l.proto = protoTCP
	case GSOUDPL4:
		l.proto = protoUDP
	default: // GSOUDP (UFO) and anything with GSOECN
		return l, ErrGSOType
	}
	if h.GSOSize == 0 || h.Flags&VirtioNeedsCsum == 0 {
		return l, ErrVirtioHdr
	}
	l.gsoSize = int(h.GSOSize)
	l.l4Off = int(h.CsumStart)
	if len(pkt) == 0 {
		return l, encap.ErrTruncated
	}
	switch pkt[0] >> 4 {
	case 4:
		if h.GSOType == GSOTCPv6 {
			return l, ErrVirtioHdr
		}
		if len(pkt) < ipv4MinHeaderLen {
			return l, encap.ErrTruncated
		}
		ihl := int(pkt[0]&0x0f) * 4
		if ihl < ipv4MinHeaderLen || l.l4Off != ihl || pkt[ipv4OffProto] != l.proto || isIPv4Fragment(pkt) {
			return l, ErrVirtioHdr
		}
	case 6:
		if h.GSOType == GSOTCPv4 {
			return l, ErrVirtioHdr
		}
		if len(pkt) < ipv6HeaderLen {
			return l, encap.ErrTruncated
		}
		// Extension headers, if any, are copied into every segment.
		if off, proto := ipv6Transport(pkt); off != l.l4Off || proto != l.proto {
			return l, ErrVirtioHdr
		}
		l.v6 = true
	default:
		return l, ErrVirtioHdr
	}
	// Every length field must be able to hold what it describes.
	if len(pkt) > maxIPPacket && !(l.v6 && len(pkt)-ipv6HeaderLen <= maxIPPacket) {
		return l, ErrVirtioHdr
	}
	if l.proto == protoTCP {
		if h.CsumOffset != tcpOffChecksum {
			return l, ErrVirtioHdr
		}
		if len(pkt) < l.l4Off+tcpMinHeaderLen {
			return l, encap.ErrTruncated
		}
		thl := int(pkt[l.l4Off+tcpOffDataOff]>>4) * 4
		if thl < tcpMinHeaderLen {
			return l, ErrVirtioHdr
		}
		l.hdrLen = l.l4Off + thl
	} else {
		if h.CsumOffset != udpOffChecksum {
			return l, ErrVirtioHdr
		}
		l.hdrLen = l.l4Off + udpHeaderLen
	}
	if len(pkt) < l.hdrLen {
		return l, encap.ErrTruncated
	}
	// HdrLen is the kernel's hint of the headers (the linear part of its
	// buffer, which may include payload); only one past the end is wrong.
	if int(h.HdrLen) > len(pkt) {
		return l, ErrVirtioHdr
	}
	l.segs = max(1, (len(pkt)-l.hdrLen+l.gsoSize-1)/l.gsoSize)
	return l, nil
}

// segLen returns the length of segment i of a pktLen-byte super-packet.
func (l *gsoLayout) segLen(pktLen, i int) int {
	start := l.hdrLen + i*l.gsoSize
	return l.hdrLen + min(l.gsoSize, pktLen-start)
}

// fits reports whether the first n segments fit their buffers.
func (l *gsoLayout) fits(pktLen int, out [][]byte, n, offset int) bool {
	for i := range n {
		if len(out[i]) < offset || len(out[i])-offset < l.segLen(pktLen, i) {
			return false
		}
	}
	return true
}

// split writes the first n segments of pkt. final says whether the n-th is
// the super-packet's last one, which keeps FIN and PSH; partial leaves
// their checksums partial.
func (l *gsoLayout) split(pkt []byte, out [][]byte, sizes []int, offset, n int, final, partial bool) {
	hdr, payload := pkt[:l.hdrLen], pkt[l.hdrLen:]
	pseudo := addrSum(pkt, l.v6, l.proto)
	var (
		id     uint16
		hdrSum uint64
	)
	if !l.v6 {
		id = binary.BigEndian.Uint16(pkt[ipv4OffID:])
		hdrSum = ipv4SumFixed(pkt[:l.l4Off])
	}
	var seq uint32
	if l.proto == protoTCP {
		seq = binary.BigEndian.Uint32(pkt[l.l4Off+tcpOffSeq:])
	}
	for i := range n {
		start := i * l.gsoSize
		end := min(start+l.gsoSize, len(payload))
		seg := out[i][offset : offset+l.hdrLen+end-start]
		copy(seg, hdr)
		copy(seg[l.hdrLen:], payload[start:end])
		sizes[i] = len(seg)

		if l.v6 {
			binary.BigEndian.PutUint16(seg[ipv6OffPayloadLen:], uint16(len(seg)-ipv6HeaderLen))
		} else {
			segID := id + uint16(i)
			binary.BigEndian.PutUint16(seg[ipv4OffTotalLen:], uint16(len(seg)))
			binary.BigEndian.PutUint16(seg[ipv4OffID:], segID)
			binary.BigEndian.PutUint16(seg[ipv4OffChecksum:], ^encap.Fold(hdrSum+uint64(len(seg))+uint64(segID)))
		}

		l4 := seg[l.l4Off:]
		var csum []byte
		if l.proto == protoTCP {
			binary.BigEndian.PutUint32(l4[tcpOffSeq:], seq+uint32(start))
			if i > 0 {
				l4[tcpOffFlags] &^= tcpFlagCWR
			}
			if !final || i < n-1 {
				l4[tcpOffFlags] &^= tcpFlagFIN | tcpFlagPSH
			}
			csum = l4[tcpOffChecksum : tcpOffChecksum+2]
		} else {
			binary.BigEndian.PutUint16(l4[udpOffLength:], uint16(len(l4)))
			csum = l4[udpOffChecksum : udpOffChecksum+2]
		}
		pseudoSum := encap.Fold(pseudo + uint64(len(l4)))
		if partial {
			binary.BigEndian.PutUint16(csum, pseudoSum)
		} else {
			csum[0], csum[1] = 0, 0
			finishChecksum(csum, encap.Checksum(l4, uint32(pseudoSum)))
		}
	}
}

// advance rewrites pkt, once its first n segments are written, into the
// super-packet of the rest, at the end of pkt, and returns it.
func (l *gsoLayout) advance(pkt []byte, n int) []byte {
	cut := n * l.gsoSize
	rest := pkt[cut:]
	// The bytes overwritten are payload already written out; copy handles
	// the overlap when cut < hdrLen.
	copy(rest[:l.hdrLen], pkt[:l.hdrLen])
	if l.v6 {
		binary.BigEndian.PutUint16(rest[ipv6OffPayloadLen:], uint16(len(rest)-ipv6HeaderLen))
	} else {
		binary.BigEndian.PutUint16(rest[ipv4OffTotalLen:], uint16(len(rest)))
		id := binary.BigEndian.Uint16(rest[ipv4OffID:])
		binary.BigEndian.PutUint16(rest[ipv4OffID:], id+uint16(n))
		setIPv4Checksum(rest, l.l4Off)
	}
	l4 := rest[l.l4Off:]
	if l.proto == protoTCP {
		seq := binary.BigEndian.Uint32(l4[tcpOffSeq:])
		binary.BigEndian.PutUint32(l4[tcpOffSeq:], seq+uint32(cut))
		l4[tcpOffFlags] &^= tcpFlagCWR
	} else {
		binary.BigEndian.PutUint16(l4[udpOffLength:], uint16(len(l4)))
	}
	return rest
}
