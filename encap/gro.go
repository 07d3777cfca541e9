package encap

import (
	"bytes"
	"encoding/binary"
)

// GROTable is the scratch space of CoalesceTCP, to be reused from one batch
// to the next by one writer: once it has seen its largest batch, coalescing
// allocates nothing. The zero value is ready to use.
type GROTable struct {
	// Verify makes CoalesceTCP check every TCP and UDP checksum before it
	// marks a packet VirtioNeedsCsum, which makes the kernel take the
	// payload as correct. A packet that fails goes out untouched with a
	// plain header, for the kernel to check and drop. It costs a pass over
	// every payload: worth it only when nothing else protects the inner
	// packets on the way here (VXLAN without an outer UDP checksum).
	Verify bool

	flows   map[groKey]int32 // flow -> index in runs of its latest run
	runs    []groRun
	carried []uint16 // per index in bufs: how many input packets it carries
}

// groKey identifies a TCP flow: addresses and ports, as they appear in the
// packet (IPv4 addresses use the first 8 bytes of addrs).
type groKey struct {
	addrs [32]byte
	ports [4]byte
	v6    bool
}

// groRun is a packet being written, with what following segments of its
// flow need to match to be appended to it.
type groRun struct {
	head    int32  // index in bufs of the packet
	l4Off   uint16 // IP header length
	hdrLen  uint16 // IP and TCP headers
	gsoSize uint16 // payload length of the head; every segment but the last has it
	nextSeq uint32 // sequence number that continues the run
	packets uint16 // input packets in the run
	open    bool   // more segments may be appended
	plain   bool   // written untouched with a GSONone header (Verify failed)
	v6      bool
}

// groPacket is what CoalesceTCP reads from one packet's headers.
type groPacket struct {
	proto  uint8 // protoTCP, protoUDP, or 0 for anything else
	v6     bool
	l4Off  int
	hdrLen int
	seq    uint32
	ack    uint32
	flags  uint8
}

// CoalesceTCP prepares a batch of packets for a TUN with IFF_VNET_HDR: it
// merges consecutive segments of a TCP flow into super-packets (GRO), and
// writes each packet's virtio-net header into the VirtioNetHdrLen bytes in
// front of it. It returns toWrite[:0] with the indices of the packets to
// write, each as bufs[i][offset-VirtioNetHdrLen:]; the others were merged.
//
// Packet i is bufs[i][offset:]; offset must be at least VirtioNetHdrLen. A
// segment is appended to the packet before it in its flow, which grows
// within its buffer's capacity (bufs[i] is lengthened), when both carry
// IPv4 or IPv6 with the same addresses, ports, TOS or traffic class and
// flow label, TTL or hop limit, DF, IP and TCP options and acknowledgement
// number; its sequence number follows on; its payload is no larger than
// the first one's, which all but the last must equal; only ACK is set, or
// ACK|PSH on the last; and the result stays within 65535 bytes. Such a
// super-packet is marked GSOTCPv4/GSOTCPv6 and VirtioNeedsCsum, with the
// pseudo-header sum in its TCP checksum field, as the kernel's GRO leaves
// it (CHECKSUM_PARTIAL): nobody sums the payload on this host. TCP and UDP
// packets that were not merged are marked VirtioNeedsCsum the same way
// (see GROTable.Verify); anything else gets a header of zeros.
//
// A packet is only ever merged into the packet before it in its flow, and
// the indices are returned in increasing order, so every flow keeps its
// order. t.Packets tells how many input packets each written one carries.
func CoalesceTCP(bufs [][]byte, offset int, t *GROTable, toWrite []int) []int {
	t.reset(len(bufs))
	toWrite = toWrite[:0]
	for i := range bufs {
		pkt := bufs[i][offset:]
		var p groPacket
		p.parse(pkt)
		switch {
		case p.proto == protoTCP:
			if t.tcp(bufs, offset, i, &p) {
				toWrite = append(toWrite, i)
			}
		case p.proto == protoUDP && (!t.Verify || p.checksumValid(pkt)):
			setPartialChecksum(pkt, p.v6, protoUDP, p.l4Off, udpOffChecksum)
			h := VirtioNetHdr{
				Flags:      VirtioNeedsCsum,
				HdrLen:     uint16(p.hdrLen),
				CsumStart:  uint16(p.l4Off),
				CsumOffset: udpOffChecksum,
			}
			h.Encode(bufs[i][offset-VirtioNetHdrLen:])
			toWrite = append(toWrite, i)
		default:
			clear(bufs[i][offset-VirtioNetHdrLen : offset])
			toWrite = append(toWrite, i)
		}
	}
	t.finish(bufs, offset)
	return toWrite
}

// Packets reports how many input packets bufs[i] carries after the last
// CoalesceTCP: 0 if it was merged into another, 1 or more if it is written.
func (t *GROTable) Packets(i int) int {
	if i < 0 || i >= len(t.carried) {
		return 0
	}
	return int(t.carried[i])
}

func (t *GROTable) reset(n int) {
	if t.flows == nil {
		t.flows = make(map[groKey]int32, n)
	}
	clear(t.flows)
	t.runs = t.runs[:0]
	if cap(t.carried) < n {
		t.carried = make([]uint16, n)
	}
	t.carried = t.carried[:n]
	for i := range t.carried {
		t.carried[i] = 1
	}
}

// tcp merges the TCP packet bufs[i] into its flow's latest run, or starts
// a run with it. It reports whether bufs[i] is to be written.
func (t *GROTable) tcp(bufs [][]byte, offset, i int, p *groPacket) bool {
	pkt := bufs[i][offset:]
	key := p.key(pkt)
	plain := t.Verify && !p.checksumValid(pkt)
	if ri, ok := t.flows[key]; ok && !plain {
		r := &t.runs[ri]
		if r.canAppend(bufs, offset, pkt, p) {
			r.append(bufs, offset, pkt, p)
			t.carried[r.head] = r.packets
			t.carried[i] = 0
			return false
		}
	}
	payload := len(pkt) - p.hdrLen
	t.runs = append(t.runs, groRun{
		head:    int32(i),
		l4Off:   uint16(p.l4Off),
		hdrLen:  uint16(p.hdrLen),
		gsoSize: uint16(payload),
		nextSeq: p.seq + uint32(payload),
		packets: 1,
		open:    !plain && p.flags == tcpFlagACK && payload > 0,
		plain:   plain,
		v6:      p.v6,
	})
	t.flows[key] = int32(len(t.runs) - 1)
	return true
}

// canAppend reports whether the segment pkt continues the run.
func (r *groRun) canAppend(bufs [][]byte, offset int, pkt []byte, p *groPacket) bool {
	payload := len(pkt) - p.hdrLen
	if !r.open || p.seq != r.nextSeq || payload == 0 || payload > int(r.gsoSize) {
		return false
	}
	if p.flags != tcpFlagACK && p.flags != tcpFlagACK|tcpFlagPSH {
		return false
	}
	if p.hdrLen != int(r.hdrLen) || p.l4Off != int(r.l4Off) {
		return false
	}
	head := bufs[r.head][offset:]
	size := len(head) + payload
	if size > maxIPPacket || cap(bufs[r.head])-offset < size {
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
			!bytes.Equal(head[ipv4MinHeaderLen:p.l4Off], pkt[ipv4MinHeaderLen:p.l4Off]) {
			return false
		}
	}
	th := head[p.l4Off:]
	return binary.BigEndian.Uint32(th[tcpOffAck:]) == p.ack &&
		bytes.Equal(th[tcpMinHeaderLen:p.hdrLen-p.l4Off], pkt[p.l4Off+tcpMinHeaderLen:p.hdrLen])
}

// append copies the payload of pkt behind the run's head.
func (r *groRun) append(bufs [][]byte, offset int, pkt []byte, p *groPacket) {
	payload := pkt[p.hdrLen:]
	end := len(bufs[r.head])
	bufs[r.head] = bufs[r.head][:end+len(payload)]
	copy(bufs[r.head][end:], payload)

	th := bufs[r.head][offset+p.l4Off:]
	// The latest window is what the receiver would be left with after
	// taking the segments one by one.
	copy(th[tcpOffWindow:tcpOffWindow+2], pkt[p.l4Off+tcpOffWindow:])
	if p.flags&tcpFlagPSH != 0 {
		th[tcpOffFlags] |= tcpFlagPSH
		r.open = false
	}
	if len(payload) < int(r.gsoSize) {
		r.open = false // only the last segment may be short
	}
	r.nextSeq += uint32(len(payload))
	r.packets++
}

// finish writes the headers of the TCP packets to be written.
func (t *GROTable) finish(bufs [][]byte, offset int) {
	for i := range t.runs {
		r := &t.runs[i]
		vhdr := bufs[r.head][offset-VirtioNetHdrLen : offset]
		if r.plain {
			clear(vhdr)
			continue
		}
		pkt := bufs[r.head][offset:]
		h := VirtioNetHdr{
			Flags:      VirtioNeedsCsum,
			HdrLen:     r.hdrLen,
			CsumStart:  r.l4Off,
			CsumOffset: tcpOffChecksum,
		}
		if r.packets > 1 {
			h.GSOSize = r.gsoSize
			if r.v6 {
				h.GSOType = GSOTCPv6
				binary.BigEndian.PutUint16(pkt[ipv6OffPayloadLen:], uint16(len(pkt)-ipv6HeaderLen))
			} else {
				h.GSOType = GSOTCPv4
				binary.BigEndian.PutUint16(pkt[ipv4OffTotalLen:], uint16(len(pkt)))
				setIPv4Checksum(pkt, int(r.l4Off))
			}
		}
		setPartialChecksum(pkt, r.v6, protoTCP, int(r.l4Off), tcpOffChecksum)
		h.Encode(vhdr)
	}
}

// setPartialChecksum stores the pseudo-header sum, not complemented, in the
// checksum field of the L4 header at l4Off, for the kernel to complete
// (CHECKSUM_PARTIAL).
func setPartialChecksum(pkt []byte, v6 bool, proto uint8, l4Off, csumOff int) {
	s := Fold(addrSum(pkt, v6, proto) + uint64(len(pkt)-l4Off))
	binary.BigEndian.PutUint16(pkt[l4Off+csumOff:], s)
}

// parse reads the headers CoalesceTCP needs. It leaves p.proto 0 for
// anything it will not touch: not IPv4 or IPv6, lengths that disagree
// with the packet, IPv4 fragments, IPv6 extension headers, or transports
// other than TCP and UDP.
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
	k.v6 = p.v6
	return k
}

// checksumValid reports whether the packet's TCP or UDP checksum verifies
// (an IPv4 UDP checksum of zero means none was computed).
func (p *groPacket) checksumValid(pkt []byte) bool {
	l4 := pkt[p.l4Off:]
	if p.proto == protoUDP && !p.v6 && l4[udpOffChecksum] == 0 && l4[udpOffChecksum+1] == 0 {
		return true
	}
	return Checksum(l4, uint32(Fold(addrSum(pkt, p.v6, p.proto)+uint64(len(l4))))) == 0xffff
}
