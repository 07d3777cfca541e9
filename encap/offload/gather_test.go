package offload

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// concatIovecs appends to dst what a gathered write of c sends: bufs[c.Index]
// from its virtio-net header on, then the payload of each packet of c.Tail.
func concatIovecs(dst []byte, bufs [][]byte, offset int, c Coalesced) []byte {
	dst = append(dst, bufs[c.Index][offset-VirtioNetHdrLen:]...)
	for _, j := range c.Tail {
		dst = append(dst, bufs[j][offset+c.HdrLen:]...)
	}
	return dst
}

// exactBatch copies pkts behind offset bytes of headroom into buffers with
// no room to spare: CoalesceGather must not need any.
func exactBatch(pkts [][]byte, offset int) [][]byte {
	bufs := make([][]byte, len(pkts))
	for i, p := range pkts {
		bufs[i] = make([]byte, offset+len(p))
		copy(bufs[i][offset:], p)
	}
	return bufs
}

// checkGatherMatches runs CoalesceGather on a copy of the packets that
// copied, a batch Coalesce with table left as coalesced, was made of, with
// a table of the same switches, and checks that every write gathers the
// very bytes Coalesce left, and that nothing but a written packet's
// headers was touched. It returns how many super-packets it gathered.
func checkGatherMatches(t *testing.T, inputs [][]byte, offset int, table *GROTable, copied [][]byte, coalesced []Coalesced) int {
	t.Helper()
	gt := GROTable{Verify: table.Verify, UDP: table.UDP, MTU: table.MTU}
	gbufs := exactBatch(inputs, offset)
	gathered := CoalesceGather(gbufs, offset, &gt, nil)
	if len(gathered) != len(coalesced) {
		t.Fatalf("CoalesceGather writes %d packets, Coalesce %d", len(gathered), len(coalesced))
	}
	supers := 0
	written := make([]bool, len(inputs))
	for k, g := range gathered {
		c := coalesced[k]
		if g.Index != c.Index || g.Packets != c.Packets || len(g.Tail) != g.Packets-1 {
			t.Fatalf("write %d: gathered %+v, copied %+v", k, g, c)
		}
		if got, want := concatIovecs(nil, gbufs, offset, g), copied[c.Index][offset-VirtioNetHdrLen:]; !bytes.Equal(got, want) {
			t.Fatalf("write %d (packet %d, %d merged): gathered %d bytes differ from the %d Coalesce wrote", k, c.Index, c.Packets, len(got), len(want))
		}
		if len(gbufs[g.Index]) != offset+len(inputs[g.Index]) {
			t.Fatalf("packet %d: buffer lengthened", g.Index)
		}
		written[g.Index] = true
		if len(g.Tail) > 0 {
			supers++
		}
	}
	for i, w := range written {
		if !w && !bytes.Equal(gbufs[i][offset:], inputs[i]) {
			t.Fatalf("packet %d, merged into another, was modified", i)
		}
	}
	return supers
}

// randomFlows returns n packets of a few interleaved TCP and UDP flows
// over IPv4 and IPv6, mostly what merges (full segments in order), with
// now and then what ends or breaks a run: a short or pushed segment, a gap
// in the sequence, a new acknowledgement or window, an IPv4 ID that does
// not follow.
func randomFlows(tb testing.TB, rng *rand.Rand, n int) [][]byte {
	type flow struct {
		s    segSpec
		size int
	}
	flows := make([]flow, 1+rng.IntN(6))
	for f := range flows {
		flows[f] = flow{
			s: segSpec{
				v6: rng.IntN(3) == 0, udp: rng.IntN(3) == 0, sport: uint16(1000 + f),
				seq: rng.Uint32(), ack: rng.Uint32(), id: uint16(rng.Uint32()),
			},
			size: 1 + rng.IntN(1448),
		}
		if !flows[f].s.udp && rng.IntN(2) == 0 {
			flows[f].s.tcpOpts = timestamps(rng.Uint32(), rng.Uint32())
		}
	}
	pkts := make([][]byte, n)
	for i := range pkts {
		f := &flows[rng.IntN(len(flows))]
		s, size := f.s, f.size
		switch rng.IntN(24) {
		case 0:
			size = 1 + rng.IntN(size)
		case 1:
			s.flags = tcpFlagACK | tcpFlagPSH
		case 2:
			s.seq += uint32(rng.IntN(3000))
		case 3:
			f.s.ack += 1000
			s.ack = f.s.ack
		case 4:
			s.window = uint16(rng.Uint32())
		case 5:
			s.id += uint16(rng.IntN(10))
		}
		s.payload = pattern(size, i)
		pkts[i] = buildSeg(tb, s)
		f.s.seq = s.seq + uint32(size)
		f.s.id++
	}
	return pkts
}

// TestCoalesceGatherMatchesCoalesce coalesces batches of random flows both
// ways: what a gathered write sends, the iovecs concatenated, is what the
// copying Coalesce wrote, byte for byte, whatever the table's switches.
func TestCoalesceGatherMatchesCoalesce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	supers := 0
	for round := range 300 {
		inputs := randomFlows(t, rng, 1+rng.IntN(128))
		var table GROTable
		fuzzTable(&table, byte(round))
		bufs := groBatch(inputs, maxIPPacket)
		coalesced := Coalesce(bufs, groOffset, &table, nil)
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			supers += checkGatherMatches(t, inputs, groOffset, &table, bufs, coalesced)
		})
	}
	if supers < 1000 {
		t.Errorf("only %d super-packets in 300 batches (2468 when written): the flows hardly merge", supers)
	}
}

// TestCoalesceGatherLimit checks that CoalesceGather puts no more than
// MaxGathered packets into one super-packet, which writev could not take,
// where Coalesce merges them all.
func TestCoalesceGatherLimit(t *testing.T) {
	var pkts [][]byte
	for i := range MaxGathered + 10 {
		pkts = append(pkts, buildSeg(t, segSpec{seq: uint32(i), payload: []byte{byte(i)}}))
	}
	var table GROTable
	if got := Coalesce(groBatch(pkts, maxIPPacket), groOffset, &table, nil); len(got) != 1 {
		t.Fatalf("Coalesce writes %d packets, want 1", len(got))
	}
	got := CoalesceGather(exactBatch(pkts, groOffset), groOffset, &table, nil)
	if len(got) != 2 || got[0].Packets != MaxGathered || len(got[0].Tail) != MaxGathered-1 || got[1].Packets != 10 {
		t.Fatalf("CoalesceGather writes %d packets, the first carrying %d; want 2, %d", len(got), got[0].Packets, MaxGathered)
	}
}
