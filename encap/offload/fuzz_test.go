package offload

import (
	"bytes"
	"encoding/binary"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/overlayd/overlayd/encap"
	"github.com/overlayd/overlayd/encap/encaptest"
)

// The offload fuzz targets take one []byte each, so that their committed
// seeds (testdata/fuzz/<FuzzName>/) read like encap's.
//
// FuzzSplitGSO: byte 0 is the number of output buffers, then what a TUN
// read gives: a virtio-net header and the packet.
//
// FuzzCoalesce: byte 0 holds GROTable's switches (fuzzVerify, fuzzUDP,
// fuzzMTU), then packets, each a big-endian 16-bit length and the packet.
//
// FuzzSuperPacketHdr (oversize_test.go): bytes 0-1 are the MTU, then the
// packet.

const fuzzOffset = 12

// Bits of FuzzCoalesce's byte 0.
const (
	fuzzVerify = 1 << iota // GROTable.Verify
	fuzzUDP                // GROTable.UDP
	fuzzMTU                // GROTable.MTU = vtepMTU
)

// fuzzTable sets table's switches from a FuzzCoalesce input's byte 0.
func fuzzTable(table *GROTable, switches byte) {
	table.Verify = switches&fuzzVerify != 0
	table.UDP = switches&fuzzUDP != 0
	table.MTU = 0
	if switches&fuzzMTU != 0 {
		table.MTU = vtepMTU
	}
}

func splitSeed(nbufs int, h VirtioNetHdr, pkt []byte) []byte {
	b := make([]byte, 1+VirtioNetHdrLen, 1+VirtioNetHdrLen+len(pkt))
	b[0] = byte(nbufs)
	h.Encode(b[1:])
	return append(b, pkt...)
}

// splitInput takes a FuzzSplitGSO input apart (see splitSeed). ok is false
// if it is too short to hold a virtio-net header.
func splitInput(data []byte) (nbufs int, h VirtioNetHdr, pkt []byte, ok bool) {
	if len(data) < 1 || h.Decode(data[1:]) != nil {
		return 0, h, nil, false
	}
	return int(data[0]), h, data[1+VirtioNetHdrLen:], true
}

func coalesceSeed(switches byte, pkts ...[]byte) []byte {
	b := []byte{switches}
	for _, p := range pkts {
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
		b = append(b, p...)
	}
	return b
}

// splitSeeds and coalesceSeeds are the fuzz targets' seeds made in code;
// the committed corpora add a kernel capture and malformed variants.
func splitSeeds(tb testing.TB) [][]byte {
	h4, tcp4 := superPacket(tb, segSpec{flags: tcpFlagACK | tcpFlagPSH, tcpOpts: timestamps(1, 2), payload: pattern(5000, 0)}, 1000)
	h6, tcp6 := superPacket(tb, segSpec{v6: true, payload: pattern(3000, 0)}, 1200)
	hu, udp := superPacket(tb, segSpec{udp: true, payload: pattern(3000, 0)}, 1400)
	hc, csum := superPacket(tb, segSpec{payload: pattern(500, 0)}, 1)
	hc.GSOType, hc.GSOSize = GSONone, 0
	return [][]byte{
		splitSeed(16, h4, tcp4),
		splitSeed(2, h4, tcp4),
		splitSeed(16, h6, tcp6),
		splitSeed(16, hu, udp),
		splitSeed(1, hc, csum),
		splitSeed(1, VirtioNetHdr{}, buildSeg(tb, segSpec{payload: []byte("plain")})),
	}
}

func coalesceSeeds(tb testing.TB) [][]byte {
	var flow [][]byte
	for i := range 4 {
		flow = append(flow, buildSeg(tb, segSpec{seq: uint32(i * 100), tcpOpts: timestamps(1, 2), payload: pattern(100, i)}))
	}
	v6 := buildSeg(tb, segSpec{v6: true, payload: pattern(100, 0)})
	v6b := buildSeg(tb, segSpec{v6: true, seq: 100, flags: tcpFlagACK | tcpFlagPSH, payload: pattern(50, 0)})
	udp := buildSeg(tb, segSpec{udp: true, payload: []byte("datagram")})
	dgrams := udpFlow(tb, segSpec{id: 0xfffe}, 4, 64, 10)
	fixed := udpFlow(tb, segSpec{sport: 1}, 3, 32, 0)
	for _, d := range fixed {
		copy(d[ipv4OffID:], fixed[0][ipv4OffID:ipv4OffID+2])
		encaptest.FixIPv4Checksum(d)
	}
	dgrams6 := udpFlow(tb, segSpec{v6: true, flow: 7}, 3, 100, 0)
	return [][]byte{
		coalesceSeed(0, flow...),
		coalesceSeed(fuzzVerify, flow[0], v6, flow[1], udp, v6b, flow[2], []byte{0x45}, flow[3]),
		coalesceSeed(fuzzUDP, dgrams...),
		coalesceSeed(fuzzUDP|fuzzVerify, dgrams[0], fixed[0], dgrams6[0], flow[0], fixed[1], dgrams[1], dgrams6[1], flow[1], fixed[2], dgrams6[2], dgrams[2]),
		coalesceSeed(fuzzMTU, flow[0], kernelVTEPFrame(tb, 3*1398+7), v6, flow[1]),
	}
}

func FuzzSplitGSO(f *testing.F) {
	for _, s := range splitSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(fuzzSplitGSO)
}

func fuzzSplitGSO(t *testing.T, data []byte) {
	nbufs, h, pkt, ok := splitInput(data)
	if !ok {
		return
	}
	orig := bytes.Clone(pkt)
	out, sizes := newBufs(nbufs, fuzzOffset+2000)
	n, _, err := SplitGSO(pkt, h, out, sizes, fuzzOffset, SplitOptions{})
	if !bytes.Equal(pkt, orig) {
		t.Fatal("SplitGSO modified its input")
	}
	switch err {
	case nil:
	case ErrTooManySegments:
		if n != 0 {
			t.Fatalf("%d segments written with ErrTooManySegments", n)
		}
		if h.GSOType != GSONone { // a single packet and no buffer
			checkSplitHead(t, pkt, h)
		}
		return
	case ErrGSOType, ErrVirtioHdr, encap.ErrTruncated, io.ErrShortBuffer:
		if n != 0 {
			t.Fatalf("%d segments written with %v", n, err)
		}
		return
	default:
		t.Fatalf("unexpected error %v", err)
	}
	if n < 1 || n > len(out) {
		t.Fatalf("n = %d with %d buffers", n, len(out))
	}
	segs := make([][]byte, n)
	for i := range n {
		if sizes[i] < 0 || sizes[i] > len(out[i])-fuzzOffset {
			t.Fatalf("size %d of buffer %d does not fit", sizes[i], i)
		}
		segs[i] = out[i][fuzzOffset : fuzzOffset+sizes[i]]
	}
	if h.GSOType == GSONone {
		checkCompleted(t, h, orig, segs)
		return
	}
	l, _ := parseGSO(orig, &h)
	var payload []byte
	for i, seg := range segs {
		if p := wireProblem(seg); p != "" {
			t.Fatalf("segment %d: %s", i, p)
		}
		keep := ipv4OffSrc // addresses and options or extension headers
		if l.v6 {
			keep = ipv6OffSrc
		}
		if !bytes.Equal(seg[keep:l.l4Off], orig[keep:l.l4Off]) {
			t.Fatalf("segment %d: addresses, options or extension headers changed", i)
		}
		if len(seg)-l.hdrLen > int(h.GSOSize) {
			t.Fatalf("segment %d: %d payload bytes, GSOSize %d", i, len(seg)-l.hdrLen, h.GSOSize)
		}
		payload = append(payload, seg[l.hdrLen:]...)
	}
	if !bytes.Equal(payload, orig[l.hdrLen:]) {
		t.Fatal("segments do not carry the payload")
	}
}

// checkCompleted checks a packet that was not a super-packet: copied as is
// but for the checksum field SplitGSO completes.
func checkCompleted(t *testing.T, h VirtioNetHdr, orig []byte, segs [][]byte) {
	t.Helper()
	if len(segs) != 1 || len(segs[0]) != len(orig) {
		t.Fatalf("%d packets for a single one", len(segs))
	}
	got := bytes.Clone(segs[0])
	if h.Flags&VirtioNeedsCsum != 0 {
		at := int(h.CsumStart) + int(h.CsumOffset)
		copy(got[at:at+2], orig[at:at+2])
	}
	if !bytes.Equal(got, orig) {
		t.Fatal("packet changed beyond its checksum")
	}
}

// checkSplitHead splits a packet that did not fit with SplitGSOHead, a few
// buffers at a time, and checks that the parts carry all of it.
func checkSplitHead(t *testing.T, pkt []byte, h VirtioNetHdr) {
	t.Helper()
	l, err := parseGSO(pkt, &h)
	if err != nil {
		t.Fatalf("ErrTooManySegments for a packet parseGSO refuses: %v", err)
	}
	want := bytes.Clone(pkt[l.hdrLen:])
	rest := bytes.Clone(pkt)
	var got []byte
	out, sizes := newBufs(7, 2000)
	for rounds := 0; rest != nil; rounds++ {
		n, r, _, err := SplitGSOHead(rest, &h, out, sizes, 0, SplitOptions{})
		if err == io.ErrShortBuffer {
			return
		}
		if err != nil || n == 0 || rounds > len(pkt) {
			t.Fatalf("SplitGSOHead = %d, %v after %d rounds", n, err, rounds)
		}
		for i := range n {
			seg := out[i][:sizes[i]]
			if p := wireProblem(seg); p != "" {
				t.Fatalf("round %d segment %d: %s", rounds, i, p)
			}
			got = append(got, seg[l.hdrLen:]...)
		}
		rest = r
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the parts do not carry the payload")
	}
}

func FuzzCoalesce(f *testing.F) {
	for _, s := range coalesceSeeds(f) {
		f.Add(s)
	}
	var table GROTable
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 1 {
			return
		}
		fuzzTable(&table, data[0])
		var inputs [][]byte
		for rest := data[1:]; len(rest) >= 2; {
			n := min(int(binary.BigEndian.Uint16(rest)), len(rest)-2)
			inputs = append(inputs, rest[2:2+n])
			rest = rest[2+n:]
		}
		bufs := make([][]byte, len(inputs))
		for i, p := range inputs {
			bufs[i] = make([]byte, fuzzOffset+len(p), fuzzOffset+maxIPPacket)
			copy(bufs[i][fuzzOffset:], p)
		}
		coalesced := Coalesce(bufs, fuzzOffset, &table, nil)
		toWrite := indices(coalesced)
		if len(inputs) <= MaxGathered {
			checkGatherMatches(t, inputs, fuzzOffset, &table, bufs, coalesced)
		}

		// Indices in range, increasing (hence unique), and every input
		// packet carried by exactly one written packet.
		if !slices.IsSorted(toWrite) || len(slices.Compact(slices.Clone(toWrite))) != len(toWrite) {
			t.Fatalf("toWrite %v not increasing", toWrite)
		}
		total := 0
		for i := range bufs {
			c := packets(coalesced, i)
			if (c > 0) != slices.Contains(toWrite, i) {
				t.Fatalf("Packets(%d) = %d, toWrite %v", i, c, toWrite)
			}
			total += c
		}
		if total != len(inputs) {
			t.Fatalf("written packets carry %d inputs, want %d", total, len(inputs))
		}

		lenIn, lenOut := 0, 0
		for _, p := range inputs {
			lenIn += len(p)
		}
		for _, i := range toWrite {
			if i < 0 || i >= len(bufs) {
				t.Fatalf("index %d out of range", i)
			}
			pkt := bufs[i][fuzzOffset:]
			lenOut += len(pkt)
			var h VirtioNetHdr
			h.Decode(bufs[i][fuzzOffset-VirtioNetHdrLen:])
			if h == (VirtioNetHdr{}) {
				if !bytes.Equal(pkt, inputs[i]) {
					t.Fatalf("packet %d with a zero header was modified", i)
				}
				continue
			}
			if len(pkt) > maxIPPacket {
				t.Fatalf("packet %d is %d bytes", i, len(pkt))
			}
			lenOut += (packets(coalesced, i) - 1) * int(h.HdrLen)
			checkCoalesced(t, inputs, bufs, toWrite, i, h)
			if _, super := SuperPacketHdr(inputs[i], table.MTU); super && table.MTU > 0 && !table.Verify {
				checkCutAtMTU(t, bufs[i], i, table.MTU)
			}
		}
		if lenIn != lenOut {
			t.Fatalf("%d bytes in, %d out with merged headers counted back", lenIn, lenOut)
		}
	})
}

// checkCoalesced checks written packet i against the inputs it carries: a
// valid packet once the kernel completes it, carrying their payloads in
// order.
func checkCoalesced(t *testing.T, inputs, bufs [][]byte, toWrite []int, i int, h VirtioNetHdr) {
	t.Helper()
	pkt := bufs[i][fuzzOffset:]
	if h.Flags != VirtioNeedsCsum || int(h.CsumStart)+int(h.CsumOffset)+2 > len(pkt) || int(h.HdrLen) > len(pkt) {
		t.Fatalf("packet %d: header %+v for %d bytes", i, h, len(pkt))
	}
	_, segs := kernelView(t, bufs[i], fuzzOffset, false)
	ipValid := encaptest.NaiveChecksum(inputs[i][:h.CsumStart], 0) == 0xffff || inputs[i][0]>>4 == 6
	for _, s := range segs {
		if p := wireProblem(s); p != "" && (ipValid || h.GSOType != GSONone) {
			t.Fatalf("packet %d after the kernel: %s", i, p)
		}
	}
	if h.GSOType == GSONone {
		return
	}
	// The inputs merged into i: those of its flow up to the next packet
	// of the flow that is written.
	var p groPacket
	p.parse(inputs[i])
	key := p.key(inputs[i])
	merged := [][]byte{inputs[i]}
	for j := i + 1; j < len(inputs); j++ {
		var q groPacket
		q.parse(inputs[j])
		if q.proto == 0 || q.key(inputs[j]) != key {
			continue
		}
		if slices.Contains(toWrite, j) {
			break
		}
		merged = append(merged, inputs[j])
	}
	var got, want []byte
	for _, s := range segs {
		got = append(got, s[h.HdrLen:]...)
	}
	for _, in := range merged {
		want = append(want, in[h.HdrLen:]...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("packet %d carries other payload than its flow's inputs", i)
	}
	if p.proto == protoUDP {
		checkDatagrams(t, i, segs, merged)
	}
}

// checkCutAtMTU checks that the kernel cuts written packet i, a TCP packet
// longer than the MTU, into packets no longer than mtu.
func checkCutAtMTU(t *testing.T, buf []byte, i, mtu int) {
	t.Helper()
	h, segs := kernelView(t, buf, fuzzOffset, false)
	if h.GSOType != GSOTCPv4 && h.GSOType != GSOTCPv6 || packetsOver(segs, mtu) {
		t.Fatalf("packet %d, longer than the MTU %d: header %+v, not cut to it", i, mtu, h)
	}
}

func packetsOver(pkts [][]byte, mtu int) bool {
	for _, p := range pkts {
		if len(p) > mtu {
			return true
		}
	}
	return false
}

// checkDatagrams checks that the kernel gives back the datagrams merged
// into packet i as they were, checksums aside; a run of fixed IPv4 IDs
// comes back numbered up from the first.
func checkDatagrams(t *testing.T, i int, segs, merged [][]byte) {
	t.Helper()
	if len(segs) != len(merged) {
		t.Fatalf("packet %d: the kernel cuts %d datagrams out of %d", i, len(segs), len(merged))
	}
	for k := range segs {
		if datagramsMatch(segs[k], merged[k], false) {
			continue
		}
		v4 := merged[0][0]>>4 == 4
		if !v4 || !datagramsMatch(segs[k], merged[k], true) ||
			be16(merged[k][ipv4OffID:]) != be16(merged[0][ipv4OffID:]) ||
			be16(segs[k][ipv4OffID:]) != be16(merged[0][ipv4OffID:])+uint16(k) {
			t.Fatalf("packet %d: datagram %d differs after the kernel", i, k)
		}
	}
}

// TestOffloadFuzzSeeds keeps the committed seeds meaningful: those named
// valid_* split or coalesce into something, the others are refused (split)
// or left alone (coalesce).
func TestOffloadFuzzSeeds(t *testing.T) {
	t.Parallel()
	for _, fuzzer := range []string{"FuzzSplitGSO", "FuzzCoalesce", "FuzzSuperPacketHdr"} {
		files, err := filepath.Glob(filepath.Join("testdata", "fuzz", fuzzer, "*"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: no seed corpus (%v)", fuzzer, err)
		}
		for _, file := range files {
			data := encaptest.CorpusBytes(t, file)
			valid := strings.HasPrefix(filepath.Base(file), "valid_")
			var ok bool
			switch fuzzer {
			case "FuzzSplitGSO":
				nbufs, h, pkt, _ := splitInput(data)
				out, sizes := newBufs(nbufs, 2000)
				_, _, err := SplitGSO(pkt, h, out, sizes, 0, SplitOptions{})
				ok = err == nil
			case "FuzzCoalesce":
				ok = coalescesSomething(data)
			default:
				_, ok = SuperPacketHdr(data[2:], int(binary.BigEndian.Uint16(data)))
			}
			if ok != valid {
				t.Errorf("%s: valid %v, but works %v", file, valid, ok)
			}
		}
	}
}

// coalescesSomething reports whether a FuzzCoalesce input merges any
// packets, or makes a super-packet of one.
func coalescesSomething(data []byte) bool {
	var bufs [][]byte
	for rest := data[1:]; len(rest) >= 2; {
		n := min(int(binary.BigEndian.Uint16(rest)), len(rest)-2)
		b := make([]byte, fuzzOffset+n, fuzzOffset+maxIPPacket)
		copy(b[fuzzOffset:], rest[2:2+n])
		bufs = append(bufs, b)
		rest = rest[2+n:]
	}
	var table GROTable
	fuzzTable(&table, data[0])
	for _, w := range Coalesce(bufs, fuzzOffset, &table, nil) {
		var h VirtioNetHdr
		h.Decode(bufs[w.Index][fuzzOffset-VirtioNetHdrLen:])
		if w.Packets > 1 || h.GSOType != GSONone {
			return true
		}
	}
	return false
}
