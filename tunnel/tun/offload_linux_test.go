package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/overlayd/overlayd/encap/offload"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// withFaults makes Create treat fault's errors as the kernel's.
func withFaults(fault func(req uint, flags uint32) error) Option {
	return func(o *options) { o.fault = fault }
}

// features returns what d negotiated.
func features(t testing.TB, d Device) (Features, error) {
	t.Helper()
	fr, ok := d.(FeatureReporter)
	if !ok {
		t.Fatalf("%T is no FeatureReporter", d)
	}
	return fr.Features()
}

func TestOffloadFeatures(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	plain := ns.create(t, "ovlp0", 1)[0]
	if f, err := features(t, plain); f != (Features{}) || err != nil || plain.BatchSize() != nativeBatchSize {
		t.Errorf("without offloads: %+v, %v, BatchSize %d", f, err, plain.BatchSize())
	}

	devs := ns.create(t, "ovlo0", 2, WithOffloads())
	for i, d := range devs {
		f, err := features(t, d)
		if !f.VirtioHdr || !f.TSO || err != nil {
			t.Errorf("queue %d with offloads: %+v, %v", i, f, err)
		}
		if d.BatchSize() != offloadBatchSize {
			t.Errorf("queue %d: BatchSize %d, want %d", i, d.BatchSize(), offloadBatchSize)
		}
		if merges := d.(*nativeDevice).gro.UDP; merges != f.USO {
			t.Errorf("queue %d merges UDP %v with USO %v", i, merges, f.USO)
		}
		t.Logf("queue %d: %+v (USO needs Linux 6.2)", i, f)
	}
}

func TestOffloadFallback(t *testing.T) {
	t.Parallel()
	refuse := func(req uint, mask uint32) func(uint, uint32) error {
		return func(r uint, flags uint32) error {
			if r == req && flags&mask != 0 {
				return unix.EINVAL
			}
			return nil
		}
	}
	tests := []struct {
		name  string
		fault func(uint, uint32) error
		want  Features
		op    string // of the OffloadError, "" for none
	}{
		{"no IFF_VNET_HDR", refuse(unix.TUNSETIFF, unix.IFF_VNET_HDR), Features{}, "IFF_VNET_HDR"},
		{"no TUNSETVNETHDRSZ", refuse(unix.TUNSETVNETHDRSZ, ^uint32(0)), Features{}, "IFF_VNET_HDR"},
		{"no USO", refuse(unix.TUNSETOFFLOAD, tunFUSO4), Features{VirtioHdr: true, TSO: true}, ""},
		{"no TUNSETOFFLOAD", refuse(unix.TUNSETOFFLOAD, ^uint32(0)), Features{VirtioHdr: true}, "TUNSETOFFLOAD"},
	}
	for _, tt := range tests {
		ns := newNetns(t)
		devs := ns.create(t, "ovl0", 2, WithOffloads(), withFaults(tt.fault))
		for q, d := range devs {
			f, err := features(t, d)
			var oerr *OffloadError
			switch {
			case f != tt.want:
				t.Errorf("%s: queue %d: %+v, want %+v", tt.name, q, f, tt.want)
			case tt.op == "" && err != nil:
				t.Errorf("%s: queue %d: %v, want no error", tt.name, q, err)
			case tt.op != "" && (!errors.As(err, &oerr) || oerr.Op != tt.op || !errors.Is(err, unix.EINVAL)):
				t.Errorf("%s: queue %d: %v, want an *OffloadError for %s", tt.name, q, err, tt.op)
			}
			if merges := d.(*nativeDevice).gro.UDP; merges != f.USO {
				t.Errorf("%s: queue %d merges UDP %v with USO %v", tt.name, q, merges, f.USO)
			}
			want := nativeBatchSize
			if tt.want.VirtioHdr {
				want = offloadBatchSize
			}
			if d.BatchSize() != want {
				t.Errorf("%s: queue %d: BatchSize %d, want %d", tt.name, q, d.BatchSize(), want)
			}
		}
		// The device works either way.
		ns.configure(t, devs[0].Name(), testMTU)
		echo(t, ns, devs)
	}
}

// echo writes echo requests into queue 0 and reads a reply from any queue.
func echo(t *testing.T, ns *netns, devs []Device) {
	t.Helper()
	req := withHeadroom(echoRequest(t, 9, 1, []byte("ping")), testOffset+offload.VirtioNetHdrLen)
	if n, err := devs[0].Write([][]byte{req}, testOffset+offload.VirtioNetHdrLen); n != 1 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	replies := make(chan struct{}, len(devs))
	for _, d := range devs {
		go func() {
			bufs, sizes := newBatch(d.BatchSize(), testOffset+testMTU)
			for {
				n, err := d.Read(bufs, sizes, testOffset)
				if err != nil {
					return
				}
				for i := range n {
					if id, _, ok := echoReply(bufs[i][testOffset : testOffset+sizes[i]]); ok && id == 9 {
						replies <- struct{}{}
						return
					}
				}
			}
		}()
	}
	<-replies
}

func TestOffloadWriteNeedsHeadroom(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	dev := ns.create(t, "ovl0", 1, WithOffloads())[0]
	ns.configure(t, "ovl0", testMTU)
	pkt := withHeadroom(echoRequest(t, 1, 1, nil), 9)
	if n, err := dev.Write([][]byte{pkt}, 9); n != 0 || err != ErrNoHeadroom {
		t.Errorf("Write at offset 9 = %d, %v, want 0, ErrNoHeadroom", n, err)
	}
	dev.Close()
	if _, err := dev.Write([][]byte{pkt}, 9); err != os.ErrClosed {
		t.Errorf("Write after Close: %v, want os.ErrClosed", err)
	}
}

// host is one side of TestOffloadTCP: a namespace whose TUN leads to the
// other side.
type host struct {
	ns   *netns
	dev  Device
	addr netip.Addr
}

// newHost makes a namespace with a TUN holding addr, routing the overlay
// through it.
func newHost(t testing.TB, addr string, offloads bool, opts ...Option) *host {
	t.Helper()
	h := &host{ns: newNetns(t), addr: netip.MustParseAddr(addr)}
	if offloads {
		opts = append(opts, WithOffloads())
	}
	h.dev = h.ns.create(t, "ovl0", 1, opts...)[0]
	var err error
	h.ns.Do(func() {
		var link netlink.Link
		if link, err = netlink.LinkByName("ovl0"); err != nil {
			return
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: h.addr.AsSlice(), Mask: net.CIDRMask(32, 32)}}
		if err = netlink.AddrAdd(link, addr); err != nil {
			return
		}
		if err = netlink.LinkSetMTU(link, testMTU); err != nil {
			return
		}
		if err = netlink.LinkSetUp(link); err != nil {
			return
		}
		err = netlink.RouteAdd(&netlink.Route{
			LinkIndex: link.Attrs().Index,
			Scope:     netlink.SCOPE_LINK,
			Dst:       &net.IPNet{IP: overlay.Addr().AsSlice(), Mask: net.CIDRMask(overlay.Bits(), 32)},
		})
	})
	if err != nil {
		t.Fatalf("configure %s: %v", addr, err)
	}
	return h
}

// pump moves packets from one TUN to another until either is closed, the
// way the forwarder does: read at an offset with headroom, write the batch
// at the same offset, in buffers that can hold a 64 KiB super-packet.
func pump(t testing.TB, from, to Device, batch int, wg *sync.WaitGroup) {
	const offset = 64
	bufs, sizes := newBatch(batch, offset+65535)
	pkts := make([][]byte, batch)
	wg.Go(func() {
		for {
			n, err := from.Read(bufs, sizes, offset)
			if errors.Is(err, os.ErrClosed) {
				return
			}
			if err != nil {
				t.Errorf("Read: %v", err)
			}
			for i := range n {
				pkts[i] = bufs[i][:offset+sizes[i]]
			}
			if _, err := to.Write(pkts[:n], offset); errors.Is(err, os.ErrClosed) {
				return
			} else if err != nil {
				t.Errorf("Write: %v", err)
			}
		}
	})
}

// link joins two hosts' TUNs with a pump each way and stops the pumps when
// the test ends.
func link(t testing.TB, a, b *host, batchAB int) {
	t.Helper()
	var wg sync.WaitGroup
	pump(t, a.dev, b.dev, batchAB, &wg)
	pump(t, b.dev, a.dev, b.dev.BatchSize(), &wg)
	t.Cleanup(func() {
		a.dev.Close()
		b.dev.Close()
		wg.Wait()
	})
}

// dialPair connects a TCP socket in a to a listener in b.
func dialPair(t testing.TB, a, b *host) (client, server net.Conn) {
	t.Helper()
	var ln net.Listener
	var err error
	b.ns.Do(func() { ln, err = net.Listen("tcp4", netip.AddrPortFrom(b.addr, 0).String()) })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	a.ns.Do(func() { client, err = net.Dial("tcp4", ln.Addr().String()) })
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.FailNow()
	}
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

// TestOffloadTCP sends a few MiB over TCP from one namespace to another
// through two TUNs and a pump between them. With offloads on the sender's
// TUN, its kernel hands over super-packets that Read must split with
// checksums the receiver verifies (when the receiving TUN has no
// offloads, its kernel checks every one); with offloads on the receiver's
// TUN, Write merges segments that the kernel must accept as they are.
func TestOffloadTCP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		send, recv bool // offloads on the sending and receiving host's TUN
		batch      int  // Read batch of the sending side's pump
		verify     bool // WithChecksumVerify on the receiving host's TUN
	}{
		{"both", true, true, offloadBatchSize, false},
		{"split only", true, false, offloadBatchSize, false},
		{"coalesce only", false, true, nativeBatchSize, false},
		{"small batches", true, true, 5, false}, // fewer buffers than segments
		{"verify", true, true, offloadBatchSize, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := newHost(t, "100.96.1.1", tt.send)
			var opts []Option
			if tt.verify {
				opts = append(opts, WithChecksumVerify())
			}
			b := newHost(t, "100.96.2.1", tt.recv, opts...)
			link(t, a, b, tt.batch)
			client, server := dialPair(t, a, b)

			const size = 8 << 20
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(i*7 + i>>11)
			}
			go func() {
				if _, err := client.Write(data); err != nil {
					t.Error(err)
				}
				client.(*net.TCPConn).CloseWrite()
			}()
			got, err := io.ReadAll(server)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("received %d bytes that differ from the %d sent", len(got), len(data))
			}

			sa, sb := &a.dev.(*nativeDevice).stats, &b.dev.(*nativeDevice).stats
			t.Logf("sender split %d super-packets into %d segments; receiver wrote %d super-packets of %d segments",
				sa.superPackets.Load(), sa.segments.Load(), sb.coalesced.Load(), sb.merged.Load())
			if tt.send && sa.superPackets.Load() == 0 {
				t.Error("the sender's TUN handed over no super-packet")
			}
			if tt.send && sa.segments.Load() <= sa.superPackets.Load() {
				t.Error("super-packets were not split")
			}
			if tt.recv && sb.coalesced.Load() == 0 {
				t.Error("the receiver's Write merged no segments")
			}
		})
	}
}

// TestOffloadAllocs checks that a Read and a Write with offloads allocate
// nothing.
func TestOffloadAllocs(t *testing.T) {
	ns := newNetns(t)
	dev := ns.create(t, "ovl0", 1, WithOffloads())[0]
	ns.configure(t, "ovl0", testMTU)
	fd := ns.dialUDP(t, netip.AddrPortFrom(remote, 9))
	sock := ns.listenUDP(t, netip.AddrPortFrom(local, 0))
	dst := sock.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort()

	const offset = testOffset + offload.VirtioNetHdrLen
	bufs, sizes := newBatch(8, offset+testMTU)
	payload := []byte("allocs")
	var err error
	allocs := testing.AllocsPerRun(200, func() {
		if _, err = unix.Write(fd, payload); err != nil {
			return
		}
		_, err = dev.Read(bufs, sizes, offset)
	})
	if err != nil {
		t.Fatal(err)
	}
	if allocs != 0 {
		t.Errorf("Read: %v allocations per call, want 0", allocs)
	}

	pkts := [][]byte{
		withHeadroom(udpPacket(t, 4000, dst, payload), offset),
		withHeadroom(udpPacket(t, 4001, dst, payload), offset),
		withHeadroom(echoRequest(t, 1, 1, payload), offset),
	}
	allocs = testing.AllocsPerRun(200, func() {
		_, err = dev.Write(pkts, offset)
	})
	if err != nil {
		t.Fatal(err)
	}
	if allocs != 0 {
		t.Errorf("Write: %v allocations per call, want 0", allocs)
	}
}

// BenchmarkTCP measures a single TCP stream across two TUNs joined by a
// pump, with and without offloads: what the kernel's TCP gets out of them.
func BenchmarkTCP(b *testing.B) {
	for _, offloads := range []bool{false, true} {
		b.Run(map[bool]string{false: "plain", true: "offloads"}[offloads], func(b *testing.B) {
			a := newHost(b, "100.96.1.1", offloads)
			c := newHost(b, "100.96.2.1", offloads)
			link(b, a, c, a.dev.BatchSize())
			client, server := dialPair(b, a, c)

			chunk := make([]byte, 1<<20)
			done := make(chan int64)
			go func() {
				n, _ := io.Copy(io.Discard, server)
				done <- n
			}()
			b.SetBytes(int64(len(chunk)))
			b.ReportAllocs()
			var sent int64
			for b.Loop() {
				n, err := client.Write(chunk)
				if err != nil {
					b.Fatal(err)
				}
				sent += int64(n)
			}
			client.(*net.TCPConn).CloseWrite()
			if got := <-done; got != sent {
				b.Fatalf("received %d bytes of %d", got, sent)
			}
		})
	}
}

// tcpSegment builds a TCP/IPv4 packet from remote:5555 to dst with
// checksums.
func tcpSegment(t testing.TB, dst netip.AddrPort, seq uint32, payload []byte) []byte {
	t.Helper()
	ip := &layers.IPv4{
		Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment,
		SrcIP: remote.AsSlice(), DstIP: dst.Addr().AsSlice(),
	}
	tcp := &layers.TCP{SrcPort: 5555, DstPort: layers.TCPPort(dst.Port()), Seq: seq, Ack: 1, ACK: true, Window: 100}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t, ip, tcp, gopacket.Payload(payload))
}

// TestOffloadWriteError writes two segments that merge and a packet the
// kernel refuses: the count is in the caller's packets, not the kernel's.
func TestOffloadWriteError(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	dev := ns.create(t, "ovl0", 1, WithOffloads())[0]
	ns.configure(t, "ovl0", testMTU)
	const offset = 16
	dst := netip.AddrPortFrom(local, 7) // nobody listens: the kernel answers with a reset
	pkts := [][]byte{
		withHeadroom(tcpSegment(t, dst, 100, make([]byte, 1000)), offset),
		withHeadroom(tcpSegment(t, dst, 1100, make([]byte, 1000)), offset),
		withHeadroom(make([]byte, 28), offset), // neither IPv4 nor IPv6
	}
	for i := range pkts[:2] {
		pkts[i] = append(make([]byte, 0, offset+65535), pkts[i]...)
	}
	n, err := dev.Write(pkts, offset)
	var werr *WriteError
	if n != 2 || !errors.As(err, &werr) || werr.Dropped != 1 || !errors.Is(err, unix.EINVAL) {
		t.Fatalf("Write = %d, %v; want 2 and a *WriteError for 1 packet refused with EINVAL", n, err)
	}
	if !slices.Equal(werr.Refused, []int{2}) {
		t.Errorf("refused packets %v, want [2]", werr.Refused)
	}
	if got := dev.(*nativeDevice).stats.coalesced.Load(); got != 1 {
		t.Errorf("%d super-packets written, want 1", got)
	}
}

// TestVnetRead feeds a Read with IFF_VNET_HDR from a socket pair instead of
// a TUN (no root needed): packets that do not fit wait for the next Read,
// super-packets larger than a whole batch are handed over in parts, and a
// malformed header drops its packet only.
func TestVnetRead(t *testing.T) {
	t.Parallel()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])

	dst := netip.AddrPortFrom(local, 80)
	super := tcpSegment(t, dst, 1000, bytes.Repeat([]byte("0123456789"), 1000)) // 10 segments of 1000
	gso := offload.VirtioNetHdr{Flags: offload.VirtioNeedsCsum, GSOType: offload.GSOTCPv4, HdrLen: 40, GSOSize: 1000, CsumStart: 20, CsumOffset: 16}
	bad := gso
	bad.GSOSize = 0
	frame := func(h offload.VirtioNetHdr, pkt []byte) {
		b := make([]byte, offload.VirtioNetHdrLen+len(pkt))
		h.Encode(b)
		copy(b[offload.VirtioNetHdrLen:], pkt)
		if _, err := unix.Write(fds[1], b); err != nil {
			t.Fatal(err)
		}
	}
	plain := udpPacket(t, 1, netip.AddrPortFrom(local, 2), []byte("plain"))
	frame(offload.VirtioNetHdr{}, plain)
	frame(gso, super)
	frame(bad, super)
	frame(offload.VirtioNetHdr{}, plain)

	stats := new(offloadCounters)
	op := &vnetReadOp{buf: make([]byte, offload.VirtioNetHdrLen+maxPacketLen), stats: stats}
	bufs, sizes := newBatch(4, 2000)
	var seqs []uint32
	read := func() (int, error) {
		op.bufs, op.sizes, op.offset, op.n, op.err = bufs, sizes, 0, 0, nil
		op.do(uintptr(fds[0]))
		for i := range op.n {
			if sizes[i] == 1040 {
				seqs = append(seqs, binary.BigEndian.Uint32(bufs[i][24:]))
			}
		}
		return op.n, op.err
	}
	for i, want := range []struct {
		n   int
		err error
	}{
		{1, nil},                  // the plain packet; the super-packet does not fit
		{4, nil},                  // more segments than buffers: the first 4
		{4, nil},                  // the next 4
		{2, offload.ErrVirtioHdr}, // the last 2, then the malformed one
		{1, nil},                  // the last packet
		{0, nil},                  // nothing left: the netpoller would wait
	} {
		n, err := read()
		if n != want.n || (err == nil) != (want.err == nil) || !errors.Is(err, want.err) || (err != nil && !errors.Is(err, ErrBadPacket)) {
			t.Fatalf("read %d = %d, %v; want %d, %v (ErrBadPacket)", i, n, err, want.n, want.err)
		}
	}
	for i, seq := range seqs {
		if seq != uint32(1000+1000*i) {
			t.Fatalf("segment %d has seq %d: %v", i, seq, seqs)
		}
	}
	if len(seqs) != 10 || stats.superPackets.Load() != 1 || stats.segments.Load() != 10 {
		t.Errorf("%d segments, counters %d, %d", len(seqs), stats.superPackets.Load(), stats.segments.Load())
	}
}

// A kernel that refuses the interface for want of privilege gets an error
// that says what is needed.
func TestCreateWithoutPrivilege(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.Do(func() {
		_, err := Create("ovl0", 1, withFaults(func(req uint, _ uint32) error {
			if req == unix.TUNSETIFF {
				return unix.EPERM
			}
			return nil
		}))
		if err == nil || !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "creating a TUN interface needs CAP_NET_ADMIN") {
			t.Errorf("Create refused with EPERM: %v, want it with the hint", err)
		}
	})
}
