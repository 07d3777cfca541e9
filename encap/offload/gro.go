package offload

import (
	"bytes"
	"encoding/binary"

	"github.com/overlayd/overlayd/encap"
)

// udpMaxSegments is the most datagrams the kernel takes in one UDP
// super-packet (UDP_MAX_SEGMENTS); it refuses a larger one.
const udpMaxSegments = 64

// MaxGathered is the most packets CoalesceGather merges into one
// super-packet: writev(2) takes at most UIO_MAXIOV (1024) iovecs, one per
// packet. Full-size segments reach the 65535-byte limit long before.
const MaxGathered = 1024

// GROTable is the scratch space of Coalesce, to be reused from one batch to
// the next by one writer: once it has seen its largest batch, coalescing
// allocates nothing. The zero value is ready to use.
type GROTable struct {
	// Verify makes Coalesce check every TCP and UDP checksum before it
	// marks a packet VirtioNeedsCsum, which makes the kernel take the
	// payload as correct. A packet that fails goes out untouched with a
	// plain header, for the kernel to check and drop. It costs a pass over
	// every payload: worth it only when nothing else protects the inner
	// packets on the way here (VXLAN without an outer UDP checksum).
	Verify bool

	// UDP makes Coalesce merge UDP datagrams into GSOUDPL4 super-packets
	// as well as TCP segments. Set it only for a TUN that accepted
	// TUN_F_USO4 and TUN_F_USO6 (Linux 6.2 and later); without it every
	// UDP datagram is written alone.
	UDP bool

	// MTU, if not 0, is the TUN's: a TCP packet longer than it (a
	// super-frame that a kernel VTEP sent whole, see SuperPacketHdr) is
	// marked a super-packet of segments no longer than MTU, which the
	// kernel cuts where the packet goes on, rather than written as one
	// packet that the next link would drop. Nothing is merged into it.
	MTU int

	flows map[groKey]int32 // flow -> index in runs of its latest run
	runs  []groRun
	// The flow of the last packet looked up and flows' entry for it, -1
	// for none yet: a batch from the underlay holds runs of one flow's
	// segments (a UDP GRO datagram), and comparing keys costs less than
	// hashing one.
	lastKey groKey
	lastRun int32
	gather  bool    // CoalesceGather: payloads stay where they are
	next    []int32 // CoalesceGather: packet -> next packet of its run, or -1
	tails   []int   // CoalesceGather: the backing of every Coalesced.Tail
}

// Coalesced is a buffer that Coalesce leaves to be written, with what the
// writer needs to know of it: which one, and how many input packets it
// carries (1, or more for a super-packet), for counting.
//
// From CoalesceGather, a super-packet is bufs[Index][offset-VirtioNetHdrLen:]
// followed by the payload of each packet j of Tail, in order:
// bufs[j][offset+HdrLen:]. Tail is empty for a packet written alone, and
// valid until the next call with the same GROTable.
type Coalesced struct {
	Index   int // in bufs: write bufs[Index][offset-VirtioNetHdrLen:]
	Packets int
	Tail    []int // CoalesceGather: the packets merged behind Index
	HdrLen  int   // CoalesceGather: IP and TCP or UDP headers of each packet
}

// groKey identifies a TCP or UDP flow: protocol, addresses and ports, as
// they appear in the packet (IPv4 addresses use the first 8 bytes of
// addrs).
type groKey struct {
	addrs [32]byte
	ports [4]byte
	proto uint8
	v6    bool
}

// groRun is a packet being written, with what following packets of its
// flow need to match to be appended to it.
type groRun struct {
	head    int32  // index in bufs of the packet
	out     int32  // index in Coalesce's result of the packet
	last    int32  // CoalesceGather: index in bufs of the last packet merged, or head
	size    uint16 // IP length of the packet with what was merged into it
	l4Off   uint16 // IP header length
	hdrLen  uint16 // IP and TCP or UDP headers
	gsoSize uint16 // payload length of the head; every segment but the last has it
	packets uint16 // input packets in the run
	nextSeq uint32 // TCP: sequence number that continues the run
	ipID    uint16 // IPv4: the head's IP ID
	fixedID bool   // UDP over IPv4: all datagrams carry ipID, rather than ipID+k
	proto   uint8  // protoTCP or protoUDP
	open    bool   // more segments may be appended
	super   bool   // one packet longer than the MTU, marked a super-packet of gsoSize segments
	plain   bool   // written untouched with a GSONone header (Verify failed)
	v6      bool
}

// groPacket is what Coalesce reads from one packet's headers.
type groPacket struct {
	proto  uint8 // protoTCP, protoUDP, or 0 for anything else
	v6     bool
	l4Off  int
	hdrLen int
	seq    uint32
	ack    uint32
	flags  uint8
}

// Coalesce prepares a batch of packets for a TUN with IFF_VNET_HDR: it
// merges consecutive segments of a TCP flow, and with t.UDP consecutive
// datagrams of a UDP flow, into super-packets (GRO), and writes each
// packet's virtio-net header into the VirtioNetHdrLen bytes in front of
// it. It returns out[:0] with the packets to write, in increasing order
// of Index, each as bufs[Index][offset-VirtioNetHdrLen:] and with how many
// input packets it carries; the others were merged.
//
// Packet i is bufs[i][offset:]; offset must be at least VirtioNetHdrLen. A
// packet is appended to the packet before it in its flow, which grows
// within its buffer's capacity (bufs[i] is lengthened), when both carry
// IPv4 with a valid header checksum, or IPv6, with the same addresses,
// ports, TOS or traffic class and flow label, TTL or hop limit, DF and IP
// options; its payload is not empty and no larger than the first one's,
// which all but the last must equal; and the result stays within 65535
// bytes. Besides:
//
//   - TCP segments must have the same TCP options and acknowledgement
//     number, sequence numbers that follow on, and only ACK set, or
//     ACK|PSH on the last; over IPv4 without DF, IDs that count up from
//     the first one's. Such a super-packet is marked GSOTCPv4 or
//     GSOTCPv6.
//   - UDP datagrams must carry a checksum and no IPv4 options, be at most
//     64 (UDP_MAX_SEGMENTS), and have IPv4 IDs that count up from the
//     first one's, or, with DF, all equal it (the kernel's segmentation
//     numbers them up again: an atomic datagram's ID means nothing, RFC
//     6864). Such a super-packet is marked GSOUDPL4; the kernel cuts it
//     back into the same datagrams before a socket sees them, unless the
//     socket asked for UDP_GRO.
//
// With t.MTU, a TCP packet longer than the MTU that SuperPacketHdr can
// describe is written alone as the super-packet it describes (GSOTCPv4 or
// GSOTCPv6, segments of the MTU), whatever its checksum field held (unless
// Verify finds it wrong).
//
// A super-packet is marked VirtioNeedsCsum, with the pseudo-header sum
// over its whole length in its TCP or UDP checksum field, as the kernel's
// GRO leaves it (CHECKSUM_PARTIAL): nobody sums the payload on this host.
// TCP and UDP packets that were not merged are marked VirtioNeedsCsum the
// same way (see GROTable.Verify); anything else gets a header of zeros.
// These are the rules of the kernel's own GRO (tcp_gro_receive,
// udp_gro_receive_segment), which is what makes the result acceptable to
// the kernel's forwarding and delivery paths.
//
// A packet is only ever merged into the packet before it in its flow, and
// the packets are returned in increasing order, so every flow keeps its
// order.
func Coalesce(bufs [][]byte, offset int, t *GROTable, out []Coalesced) []Coalesced {
	t.gather = false
	return t.coalesce(bufs, offset, out)
}

// CoalesceGather is Coalesce without copying payloads: a packet merged into
// another stays in its own buffer, and Coalesced.Tail lists it for a
// gathered write (writev(2)), whose iovecs concatenated are, byte for byte,
// what Coalesce would have left in bufs[Index]. Only the first packet of a
// super-packet is written to (its virtio-net, IP and TCP or UDP headers);
// its buffer keeps its length, which therefore needs no spare capacity. A
// super-packet carries at most MaxGathered packets.
func CoalesceGather(bufs [][]byte, offset int, t *GROTable, out []Coalesced) []Coalesced {
	t.gather = true
	return t.coalesce(bufs, offset, out)
}

func (t *GROTable) coalesce(bufs [][]byte, offset int, out []Coalesced) []Coalesced {
	t.reset(len(bufs))
	out = out[:0]
	for i := range bufs {
		var p groPacket
		p.parse(bufs[i][offset:])
		if p.proto == 0 {
			clear(bufs[i][offset-VirtioNetHdrLen : offset])
			out = append(out, Coalesced{Index: i, Packets: 1})
			continue
		}
		if t.add(bufs, offset, i, &p, int32(len(out))) {
			out = append(out, Coalesced{Index: i, Packets: 1})
		}
	}
	t.finish(bufs, offset, out)
	return out
}

func (t *GROTable) reset(n int) {
	if t.flows == nil {
		t.flows = make(map[groKey]int32, n)
	}
	clear(t.flows)
	t.lastRun = -1
	t.runs = t.runs[:0]
	if t.gather {
		if cap(t.next) < n {
			t.next = make([]int32, n)
			t.tails = make([]int, 0, n)
		}
		t.next = t.next[:n]
		t.tails = t.tails[:0]
	}
}

// add merges the TCP or UDP packet bufs[i] into its flow's latest run, or
// starts a run with it, to be written as Coalesce's result out. It reports
// whether bufs[i] is to be written.
func (t *GROTable) add(bufs [][]byte, offset, i int, p *groPacket, out int32) bool {
	pkt := bufs[i][offset:]
	plain := t.Verify && !p.checksumValid(pkt)
	merging := p.proto == protoTCP || t.UDP
	var key groKey
	if merging {
		key = p.key(pkt)
		if ri, ok := t.latestRun(key); ok && !plain {
			r := &t.runs[ri]
			if r.canAppend(bufs, offset, pkt, p, t.gather) {
				r.append(bufs, offset, pkt, p, t.gather)
				if t.gather {
					t.link(r, i)
				}
				return false
			}
		}
	}
	r := newRun(pkt, i, out, p, merging, plain)
	if p.proto == protoTCP && t.MTU > 0 && len(pkt) > t.MTU && !plain {
		if h, ok := SuperPacketHdr(pkt, t.MTU); ok {
			r.super, r.open, r.gsoSize = true, false, h.GSOSize
		}
	}
	t.runs = append(t.runs, r)
	if merging {
		// Even a run that stays closed ends its flow's previous one:
		// nothing behind it may overtake it.
		ri := int32(len(t.runs) - 1)
		t.flows[key] = ri
		t.lastKey, t.lastRun = key, ri
	}
	return true
}

// latestRun returns the index in runs of key's latest run, if it has one.
func (t *GROTable) latestRun(key groKey) (int32, bool) {
	if t.lastRun >= 0 && key == t.lastKey {
		return t.lastRun, true
	}
	ri, ok := t.flows[key]
	if ok {
		t.lastKey, t.lastRun = key, ri
	}
	return ri, ok
}

// newRun starts a run with pkt, bufs[i], Coalesce's result out. merging
// says whether its flow may merge at all, plain whether pkt failed
// verification.
func newRun(pkt []byte, i int, out int32, p *groPacket, merging, plain bool) groRun {
	payload := len(pkt) - p.hdrLen
	r := groRun{
		head:    int32(i),
		out:     out,
		last:    int32(i),
		size:    uint16(len(pkt)),
		l4Off:   uint16(p.l4Off),
		hdrLen:  uint16(p.hdrLen),
		gsoSize: uint16(payload),
		packets: 1,
		proto:   p.proto,
		plain:   plain,
		v6:      p.v6,
	}
	r.open = merging && !plain && payload > 0 && (p.v6 || ipv4HeaderValid(pkt, p.l4Off))
	if p.proto == protoTCP {
		r.nextSeq = p.seq + uint32(payload)
		r.open = r.open && p.flags == tcpFlagACK
	} else {
		r.open = r.open && (p.v6 || p.l4Off == ipv4MinHeaderLen) && hasUDPChecksum(pkt, p.l4Off)
	}
	if !p.v6 {
		r.ipID = binary.BigEndian.Uint16(pkt[ipv4OffID:])
	}
	return r
}

// canAppend reports whether pkt continues the run. Unless gathered, the
// head's buffer must have room for pkt's payload.
func (r *groRun) canAppend(bufs [][]byte, offset int, pkt []byte, p *groPacket, gather bool) bool {
	payload := len(pkt) - p.hdrLen
	if !r.open || payload == 0 || payload > int(r.gsoSize) ||
		p.hdrLen != int(r.hdrLen) || p.l4Off != int(r.l4Off) {
		return false
	}
	head := bufs[r.head][offset:]
	size := int(r.size) + payload
	if size > maxIPPacket {
		return false
	}
	if gather && r.packets >= MaxGathered || !gather && cap(bufs[r.head])-offset < size {
		return false
	}
	if p.v6 {
		// Version, traffic class and flow label; hop limit.
		if !bytes.Equal(head[:4], pkt[:4]) || head[ipv6OffHopLimit] != pkt[ipv6OffHopLimit] {
			return false
		}
	} else {
		// TOS; DF and the reserved bit (MF is known clear); TTL; options.
		if head[1] != pkt[1] || head[ipv4OffFlags]&0xe0 != pkt[ipv4OffFlags]&0xe0 ||
			head[ipv4OffTTL] != pkt[ipv4OffTTL] ||
			!bytes.Equal(head[ipv4MinHeaderLen:p.l4Off], pkt[ipv4MinHeaderLen:p.l4Off]) ||
			!ipv4HeaderValid(pkt, p.l4Off) {
			return false
		}
	}
	if p.proto == protoUDP {
		return r.packets < udpMaxSegments && hasUDPChecksum(pkt, p.l4Off) &&
			(p.v6 || r.idFollows(pkt))
	}
	if p.seq != r.nextSeq || p.flags != tcpFlagACK && p.flags != tcpFlagACK|tcpFlagPSH {
		return false
	}
	// Without DF the ID is what fragments are reassembled by, and the
	// kernel's segmentation numbers the segments up from the head's: only
	// segments already so numbered may merge (the kernel's GRO flushes
	// on any other non-DF ID).
	if !p.v6 && pkt[ipv4OffFlags]&ipv4FlagDF == 0 && binary.BigEndian.Uint16(pkt[ipv4OffID:]) != r.ipID+r.packets {
		return false
	}
	th := head[p.l4Off:]
	return binary.BigEndian.Uint32(th[tcpOffAck:]) == p.ack &&
		bytes.Equal(th[tcpMinHeaderLen:p.hdrLen-p.l4Off], pkt[p.l4Off+tcpMinHeaderLen:p.hdrLen])
}

// idFollows reports whether the IPv4 ID of the datagram pkt continues the
// run: the head's plus the datagrams before it, as the kernel numbers the
// segments it cuts; or, with DF (known equal to the head's), the head's
// own, as Linux sends on unconnected sockets. The second datagram decides
// which of the two the run is.
func (r *groRun) idFollows(pkt []byte) bool {
	id := binary.BigEndian.Uint16(pkt[ipv4OffID:])
	if id == r.ipID && pkt[ipv4OffFlags]&ipv4FlagDF != 0 && (r.packets == 1 || r.fixedID) {
		return true
	}
	return !r.fixedID && id == r.ipID+r.packets
}

// append adds the payload of pkt to the run: copied behind the run's
// head, unless gathered.
func (r *groRun) append(bufs [][]byte, offset int, pkt []byte, p *groPacket, gather bool) {
	payload := pkt[p.hdrLen:]
	if !gather {
		end := len(bufs[r.head])
		bufs[r.head] = bufs[r.head][:end+len(payload)]
		copy(bufs[r.head][end:], payload)
	}
	r.size += uint16(len(payload))

	if p.proto == protoUDP {
		if r.packets == 1 && !r.v6 {
			r.fixedID = binary.BigEndian.Uint16(pkt[ipv4OffID:]) == r.ipID
		}
	} else {
		th := bufs[r.head][offset+p.l4Off:]
		// The latest window is what the receiver would be left with
		// after taking the segments one by one.
		copy(th[tcpOffWindow:tcpOffWindow+2], pkt[p.l4Off+tcpOffWindow:])
		if p.flags&tcpFlagPSH != 0 {
			th[tcpOffFlags] |= tcpFlagPSH
			r.open = false
		}
		r.nextSeq += uint32(len(payload))
	}
	if len(payload) < int(r.gsoSize) {
		r.open = false // only the last segment may be short
	}
	r.packets++
}

// link records packet i, just appended to r, as the run's last.
func (t *GROTable) link(r *groRun, i int) {
	t.next[r.last] = int32(i)
	t.next[i] = -1
	r.last = int32(i)
}

// finish writes the headers of the TCP and UDP packets to be written, and
// how many packets each carries (and, gathered, which) into out.
func (t *GROTable) finish(bufs [][]byte, offset int, out []Coalesced) {
	for i := range t.runs {
		r := &t.runs[i]
		out[r.out].Packets = int(r.packets)
		if t.gather && r.packets > 1 {
			start := len(t.tails)
			for j := t.next[r.head]; ; j = t.next[j] {
				t.tails = append(t.tails, int(j))
				if j == r.last {
					break
				}
			}
			out[r.out].Tail = t.tails[start:len(t.tails):len(t.tails)]
			out[r.out].HdrLen = int(r.hdrLen)
		}
		vhdr := bufs[r.head][offset-VirtioNetHdrLen : offset]
		if r.plain {
			clear(vhdr)
			continue
		}
		pkt := bufs[r.head][offset:]
		size := int(r.size) // len(pkt) unless gathered
		h := VirtioNetHdr{
			Flags:      VirtioNeedsCsum,
			HdrLen:     r.hdrLen,
			CsumStart:  r.l4Off,
			CsumOffset: tcpOffChecksum,
		}
		if r.proto == protoUDP {
			h.CsumOffset = udpOffChecksum
		}
		if r.packets > 1 || r.super {
			h.GSOSize = r.gsoSize
			switch {
			case r.proto == protoUDP:
				h.GSOType = GSOUDPL4
				binary.BigEndian.PutUint16(pkt[r.l4Off+udpOffLength:], uint16(size-int(r.l4Off)))
			case r.v6:
				h.GSOType = GSOTCPv6
			default:
				h.GSOType = GSOTCPv4
			}
			if r.v6 {
				binary.BigEndian.PutUint16(pkt[ipv6OffPayloadLen:], uint16(size-ipv6HeaderLen))
			} else {
				binary.BigEndian.PutUint16(pkt[ipv4OffTotalLen:], uint16(size))
				setIPv4Checksum(pkt, int(r.l4Off))
			}
		}
		setPartialChecksumLen(pkt, size, r.v6, r.proto, int(r.l4Off), int(h.CsumOffset))
		h.Encode(vhdr)
	}
}

// setPartialChecksum stores the pseudo-header sum, not complemented, in the
// checksum field of the L4 header at l4Off, for the kernel to complete
// (CHECKSUM_PARTIAL).
func setPartialChecksum(pkt []byte, v6 bool, proto uint8, l4Off, csumOff int) {
	setPartialChecksumLen(pkt, len(pkt), v6, proto, l4Off, csumOff)
}

// setPartialChecksumLen is setPartialChecksum for a packet of size bytes
// whose headers are in pkt (the rest gathered from elsewhere).
func setPartialChecksumLen(pkt []byte, size int, v6 bool, proto uint8, l4Off, csumOff int) {
	s := encap.Fold(addrSum(pkt, v6, proto) + uint64(size-l4Off))
	binary.BigEndian.PutUint16(pkt[l4Off+csumOff:], s)
}

// ipv4HeaderValid reports whether the IPv4 header of pkt, ihl bytes long,
// has a correct checksum: a merged packet gets a new one, which must not
// cover up a damaged header.
func ipv4HeaderValid(pkt []byte, ihl int) bool {
	return encap.Checksum(pkt[:ihl], 0) == 0xffff
}

// hasUDPChecksum reports whether the UDP datagram at l4Off carries a
// checksum. The kernel's UDP GRO merges only those: the segments of a
// super-packet all get one.
func hasUDPChecksum(pkt []byte, l4Off int) bool {
	return pkt[l4Off+udpOffChecksum]|pkt[l4Off+udpOffChecksum+1] != 0
}

// parse reads the headers Coalesce needs. It leaves p.proto 0 for anything
// it will not touch: not IPv4 or IPv6, lengths that disagree with the
// packet, IPv4 fragments, IPv6 extension headers, or transports other
// than TCP and UDP.
func (p *groPacket) parse(pkt []byte) {
	if len(pkt) > maxIPPacket || len(pkt) == 0 {
		return
	}
	var proto uint8
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < ipv4MinHeaderLen {
			return
		}
		p.l4Off = int(pkt[0]&0x0f) * 4
		if p.l4Off < ipv4MinHeaderLen || p.l4Off > len(pkt) ||
			int(binary.BigEndian.Uint16(pkt[ipv4OffTotalLen:])) != len(pkt) || isIPv4Fragment(pkt) {
			return
		}
		proto = pkt[ipv4OffProto]
	case 6:
		if len(pkt) < ipv6HeaderLen ||
			int(binary.BigEndian.Uint16(pkt[ipv6OffPayloadLen:])) != len(pkt)-ipv6HeaderLen {
			return
		}
		p.l4Off, p.v6 = ipv6HeaderLen, true
		proto = pkt[ipv6OffNextHeader]
	default:
		return
	}
	l4 := pkt[p.l4Off:]
	switch proto {
	case protoTCP:
		if len(l4) < tcpMinHeaderLen {
			return
		}
		thl := int(l4[tcpOffDataOff]>>4) * 4
		if thl < tcpMinHeaderLen || thl > len(l4) {
			return
		}
		p.hdrLen = p.l4Off + thl
		p.seq = binary.BigEndian.Uint32(l4[tcpOffSeq:])
		p.ack = binary.BigEndian.Uint32(l4[tcpOffAck:])
		p.flags = l4[tcpOffFlags]
	case protoUDP:
		if len(l4) < udpHeaderLen || int(binary.BigEndian.Uint16(l4[udpOffLength:])) != len(l4) {
			return
		}
		p.hdrLen = p.l4Off + udpHeaderLen
	default:
		return
	}
	p.proto = proto
}

func (p *groPacket) key(pkt []byte) groKey {
	var k groKey
	if p.v6 {
		copy(k.addrs[:], pkt[ipv6OffSrc:ipv6HeaderLen])
	} else {
		copy(k.addrs[:], pkt[ipv4OffSrc:ipv4OffDst+4])
	}
	copy(k.ports[:], pkt[p.l4Off:p.l4Off+4])
	k.proto = p.proto
	k.v6 = p.v6
	return k
}

// checksumValid reports whether the packet's TCP or UDP checksum verifies
// (an IPv4 UDP checksum of zero means none was computed).
func (p *groPacket) checksumValid(pkt []byte) bool {
	l4 := pkt[p.l4Off:]
	if p.proto == protoUDP && !p.v6 && !hasUDPChecksum(pkt, p.l4Off) {
		return true
	}
	return encap.Checksum(l4, uint32(encap.Fold(addrSum(pkt, p.v6, p.proto)+uint64(len(l4))))) == 0xffff
}
