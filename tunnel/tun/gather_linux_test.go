package tun

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/overlayd/overlayd/encap/offload"
)

// flowPacket builds an IPv4 packet with DF from remote:5555 to local:dport:
// a TCP segment (ACK, and PSH if push) or a UDP datagram, with checksums.
func flowPacket(t testing.TB, udp bool, dport uint16, seq uint32, id uint16, push bool, payload []byte) []byte {
	t.Helper()
	ip := &layers.IPv4{
		Version: 4, TTL: 64, Id: id, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolTCP,
		SrcIP: remote.AsSlice(), DstIP: local.AsSlice(),
	}
	var l4 interface {
		gopacket.SerializableLayer
		SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
	}
	if udp {
		ip.Protocol = layers.IPProtocolUDP
		l4 = &layers.UDP{SrcPort: 5555, DstPort: layers.UDPPort(dport)}
	} else {
		l4 = &layers.TCP{SrcPort: 5555, DstPort: layers.TCPPort(dport), Seq: seq, Ack: 1, ACK: true, PSH: push, Window: 100}
	}
	if err := l4.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t, ip, l4, gopacket.Payload(payload))
}

// randomBatch returns n packets of a few interleaved TCP and UDP flows,
// mostly full segments that merge, now and then a short or pushed one, a
// gap in the sequence, or an ICMP echo request in between.
func randomBatch(t testing.TB, rng *rand.Rand, n int) [][]byte {
	type flow struct {
		udp  bool
		seq  uint32
		id   uint16
		size int
	}
	flows := make([]flow, 1+rng.IntN(5))
	for f := range flows {
		flows[f] = flow{udp: rng.IntN(3) == 0, seq: rng.Uint32(), id: uint16(rng.Uint32()), size: 1 + rng.IntN(1400)}
	}
	pkts := make([][]byte, n)
	for i := range pkts {
		f := rng.IntN(len(flows))
		fl := &flows[f]
		size, push := fl.size, false
		switch rng.IntN(20) {
		case 0:
			pkts[i] = echoRequest(t, uint16(i), 1, []byte("echo"))
			continue
		case 1:
			size = 1 + rng.IntN(size)
		case 2:
			push = true
		case 3:
			fl.seq += 100
		}
		payload := bytes.Repeat([]byte{byte(i)}, size)
		pkts[i] = flowPacket(t, fl.udp, uint16(80+f), fl.seq, fl.id, push, payload)
		fl.seq += uint32(size)
		fl.id++
	}
	return pkts
}

// TestGatheredWriteMatchesCopy writes batches of random flows through a
// Device with offloads whose queue is a socket, and reads what "the
// kernel" got, each write(2) or writev(2) one message: byte for byte what
// the copying offload.Coalesce left in its buffers for write(2), virtio-net
// headers included, while the Device's own buffers had no room to copy
// into.
func TestGatheredWriteMatchesCopy(t *testing.T) {
	t.Parallel()
	d, kernel := socketDevice(t, true)
	d.gro.UDP = true // as with USO
	const offset = testOffset + offload.VirtioNetHdrLen
	rng := rand.New(rand.NewPCG(3, 4))
	supers := 0
	for round := range 100 {
		pkts := randomBatch(t, rng, 1+rng.IntN(offloadBatchSize))
		d.gro.Verify = round%2 == 1

		ref := make([][]byte, len(pkts))
		bufs := make([][]byte, len(pkts))
		for i, p := range pkts {
			ref[i] = append(make([]byte, offset, offset+maxPacketLen), p...)
			bufs[i] = withHeadroom(p, offset)[: offset+len(p) : offset+len(p)]
		}
		table := offload.GROTable{UDP: true, Verify: d.gro.Verify, MTU: maxPacketLen}
		var want [][]byte
		for _, c := range offload.Coalesce(ref, offset, &table, nil) {
			want = append(want, ref[c.Index][offset-offload.VirtioNetHdrLen:])
			if c.Packets > 1 {
				supers++
			}
		}

		got := make(chan [][]byte)
		go func() { got <- receiveN(t, kernel, len(want)) }()
		n, err := d.Write(bufs, offset)
		if err != nil || n != len(pkts) {
			t.Fatalf("round %d: Write = %d, %v; want %d", round, n, err, len(pkts))
		}
		msgs := <-got
		if len(msgs) != len(want) {
			t.Fatalf("round %d: %d messages, want %d", round, len(msgs), len(want))
		}
		for k := range want {
			if !bytes.Equal(msgs[k], want[k]) {
				t.Fatalf("round %d, message %d: %d bytes differ from the %d the copying path writes", round, k, len(msgs[k]), len(want[k]))
			}
		}
	}
	if supers < 500 {
		t.Errorf("only %d super-packets in 100 batches: the flows hardly merge", supers)
	}
	if d.stats.coalesced.Load() != uint64(supers) {
		t.Errorf("Write counted %d super-packets, want %d", d.stats.coalesced.Load(), supers)
	}
}

// receiveN reads n messages from the nonblocking socket fd, waiting for
// each in poll(2). It reports a failure and returns what it got if the
// socket fails.
func receiveN(t testing.TB, fd, n int) [][]byte {
	buf := make([]byte, offload.VirtioNetHdrLen+maxPacketLen+1)
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	var msgs [][]byte
	for len(msgs) < n {
		m, err := unix.Read(fd, buf)
		switch err {
		case nil:
			msgs = append(msgs, bytes.Clone(buf[:m]))
		case unix.EAGAIN, unix.EINTR:
			if _, err := unix.Poll(pfd, -1); err != nil && err != unix.EINTR {
				t.Errorf("poll: %v", err)
				return msgs
			}
		default:
			t.Errorf("read: %v", err)
			return msgs
		}
	}
	return msgs
}

// BenchmarkWriteTCP writes batches of 128 segments of 1400 bytes, three TCP
// flows interleaved, through a Device with offloads into a socket that a
// goroutine drains: Write's own cost, three super-packets a batch, beside
// the kernel's copy that any write into a TUN costs.
func BenchmarkWriteTCP(b *testing.B) {
	d, kernel := socketDevice(b, true)
	const n, size, flows = 128, 1400, 3
	const offset = testOffset + offload.VirtioNetHdrLen
	bufs := make([][]byte, n)
	orig := make([][]byte, n)
	for i := range bufs {
		pkt := flowPacket(b, false, uint16(80+i%flows), uint32(i/flows*size), 0, false, bytes.Repeat([]byte{byte(i)}, size))
		bufs[i] = append(make([]byte, offset, offset+maxPacketLen), pkt...)
		orig[i] = bytes.Clone(bufs[i])
	}
	go func() {
		buf := make([]byte, offload.VirtioNetHdrLen+maxPacketLen)
		pfd := []unix.PollFd{{Fd: int32(kernel), Events: unix.POLLIN}}
		for {
			m, err := unix.Read(kernel, buf)
			if err == unix.EAGAIN {
				unix.Poll(pfd, -1)
			} else if err != nil || m == 0 { // 0: the Device was closed
				return
			}
		}
	}()
	b.SetBytes(n * size)
	b.ReportAllocs()
	for b.Loop() {
		for i := range bufs { // Write rewrites the first packets' headers (and lengthened them)
			bufs[i] = bufs[i][:len(orig[i])]
			copy(bufs[i][:offset+40], orig[i])
		}
		if m, err := d.Write(bufs, offset); m != n || err != nil {
			b.Fatalf("Write = %d, %v", m, err)
		}
	}
	b.ReportMetric(float64(len(d.toWrite)), "writes/batch")
}
