package underlay

import "net/netip"

// Limits of one UDP GSO message, from the kernel's udp_send_skb.
const (
	MaxSegments   = 64             // UDP_MAX_SEGMENTS before Linux 6.x raised it
	MaxGSOPayload = 65535 - 20 - 8 // one IPv4 datagram's worth
)

// SegmentRun returns how many datagrams from bufs[0] one UDP GSO message
// (UDP_SEGMENT, or a GSO super-frame on AF_PACKET) can carry: all to
// dsts[0], all as long as the first but the last, which may be shorter, at
// most MaxSegments and MaxGSOPayload bytes in all. It is at least 1.
func SegmentRun(bufs [][]byte, dsts []netip.AddrPort) int {
	size := len(bufs[0])
	if size == 0 {
		return 1 // a 0-byte segment would vanish
	}
	total, n := size, 1
	for n < len(bufs) && n < MaxSegments {
		l := len(bufs[n])
		if dsts[n] != dsts[0] || l == 0 || l > size || total+l > MaxGSOPayload {
			break
		}
		total += l
		n++
		if l < size {
			break // only the last segment may be short
		}
	}
	return n
}

// SplitSegments copies data, a received datagram or a coalesced run of
// them (UDP GRO, or a GSO super-frame on AF_PACKET), from byte off on into
// bufs in segSize pieces (segSize <= 0: one piece), and reports how many
// buffers it filled and how far into data it got. A piece longer than its
// buffer is truncated to it. An empty data fills one buffer with 0 bytes.
func SplitSegments(bufs [][]byte, sizes []int, data []byte, segSize, off int) (n, next int) {
	if len(bufs) == 0 {
		return 0, off
	}
	if len(data) == 0 {
		sizes[0] = 0
		return 1, 0
	}
	if segSize <= 0 {
		segSize = len(data)
	}
	for n < len(bufs) && off < len(data) {
		end := min(off+segSize, len(data))
		sizes[n] = copy(bufs[n], data[off:end])
		off = end
		n++
	}
	return n, off
}
