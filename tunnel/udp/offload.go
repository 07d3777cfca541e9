package udp

import "net/netip"

// Limits of one UDP GSO message, from the kernel's udp_send_skb.
const (
	maxSegments   = 64             // UDP_MAX_SEGMENTS before Linux 6.x raised it
	maxGSOPayload = 65535 - 20 - 8 // one IPv4 datagram's worth
	groBufSize    = 1 << 16        // GRO stops coalescing before 64 KiB
)

// SegmentRun returns how many datagrams from bufs[0] one UDP GSO message
// (UDP_SEGMENT, or a GSO super-frame on AF_PACKET) can carry: all to
// dsts[0], all as long as the first but the last, which may be shorter, at
// most maxSegments and maxGSOPayload bytes in all. It is at least 1.
func SegmentRun(bufs [][]byte, dsts []netip.AddrPort) int {
	size := len(bufs[0])
	if size == 0 {
		return 1 // a 0-byte segment would vanish
	}
	total, n := size, 1
	for n < len(bufs) && n < maxSegments {
		l := len(bufs[n])
		if dsts[n] != dsts[0] || l == 0 || l > size || total+l > maxGSOPayload {
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

// splitSegments copies data, a datagram or the rest of a coalesced one, into
// bufs in segSize pieces (segSize <= 0: one piece), and reports how many
// buffers it filled and how many bytes of data it used. A piece longer than
// its buffer is truncated to it. An empty data fills one buffer with 0
// bytes.
func splitSegments(bufs [][]byte, sizes []int, data []byte, segSize int) (n, used int) {
	if len(bufs) == 0 {
		return 0, 0
	}
	if len(data) == 0 {
		sizes[0] = 0
		return 1, 0
	}
	if segSize <= 0 {
		segSize = len(data)
	}
	for n < len(bufs) && used < len(data) {
		end := min(used+segSize, len(data))
		sizes[n] = copy(bufs[n], data[used:end])
		used = end
		n++
	}
	return n, used
}
