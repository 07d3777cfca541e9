package afpacket

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/overlayd/overlayd/perf/netns"
	"github.com/overlayd/overlayd/tunnel/udp"
	"github.com/overlayd/overlayd/tunnel/underlay"
)

// The root tests run on two emulated hosts: namespaces a and b joined by a
// veth pair, a0 (198.18.0.1) in a and b0 (198.18.0.2) in b.
var (
	addrA = netip.MustParseAddr("198.18.0.1")
	addrB = netip.MustParseAddr("198.18.0.2")
)

const tunnelPort = 8285

type hosts struct {
	t    testing.TB
	a, b *netns.NS
}

// newHosts makes the hosts of a parallel test.
func newHosts(t testing.TB) *hosts {
	t.Helper()
	if err := netns.Available(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	if tt, ok := t.(*testing.T); ok {
		tt.Parallel()
	}
	return newSerialHosts(t)
}

// newSerialHosts makes the hosts of a test that must run alone, such as
// one that counts allocations.
func newSerialHosts(t testing.TB) *hosts {
	t.Helper()
	if err := netns.Available(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	prefix := netns.Prefix("afpacket")
	h := &hosts{t: t}
	t.Cleanup(func() {
		if names, err := netns.List(prefix); err != nil || len(names) > 0 {
			t.Errorf("namespaces left behind: %v %v", names, err)
		}
	})
	h.a, h.b = h.ns(prefix+"-a"), h.ns(prefix+"-b")
	h.ip(h.a, "link", "add", "a0", "type", "veth", "peer", "name", "b0", "netns", h.b.Name)
	h.ip(h.a, "addr", "add", addrA.String()+"/24", "dev", "a0")
	h.ip(h.b, "addr", "add", addrB.String()+"/24", "dev", "b0")
	h.ip(h.a, "link", "set", "a0", "up")
	h.ip(h.b, "link", "set", "b0", "up")
	return h
}

func (h *hosts) ns(name string) *netns.NS {
	h.t.Helper()
	n, err := netns.New(name)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() {
		if err := n.Delete(); err != nil {
			h.t.Error(err)
		}
	})
	h.ip(n, "link", "set", "lo", "up")
	if err := n.Sysctl("net.ipv6.conf.all.disable_ipv6", "1"); err != nil {
		h.t.Fatal(err)
	}
	return n
}

func (h *hosts) ip(n *netns.NS, args ...string) {
	h.t.Helper()
	if err := n.IP(context.Background(), args...); err != nil {
		h.t.Fatal(err)
	}
}

// listen opens an afpacket Conn in n on iface, closed when the test ends.
func (h *hosts) listen(n *netns.NS, iface string, laddr netip.AddrPort, opts Options) *conn {
	h.t.Helper()
	var c underlay.Conn
	err := n.Do(func() (err error) {
		c, err = Listen(iface, laddr, opts)
		return err
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c.(*conn)
}

// socket opens a kernel UDP socket in n.
func (h *hosts) socket(n *netns.NS, laddr netip.AddrPort) *net.UDPConn {
	h.t.Helper()
	var c *net.UDPConn
	err := n.Do(func() (err error) {
		if c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(laddr)); err != nil {
			return err
		}
		// Room for every datagram a test sends before reading.
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		}); err != nil {
			return err
		}
		return serr
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

// waitPortFree waits until a UDP socket can bind laddr in n. A closed
// socket's port is free at once, unless a child this test process forked
// (ip netns exec, in a parallel test) still holds a copy of the descriptor
// until it execs: so retry for a while before failing.
func (h *hosts) waitPortFree(n *netns.NS, laddr netip.AddrPort) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := n.Do(func() error {
			c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(laddr))
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return
		}
		if !errors.Is(err, unix.EADDRINUSE) || time.Now().After(deadline) {
			h.t.Fatalf("port still taken after Close: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// icmpUnreachSent reads n's count of ICMP destination unreachables sent.
func (h *hosts) icmpUnreachSent(n *netns.NS) uint64 {
	h.t.Helper()
	out, err := n.Exec(context.Background(), "cat", "/proc/net/snmp")
	if err != nil {
		h.t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] != "Icmp:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i, name := range names {
			if name == "OutDestUnreachs" {
				v, err := strconv.ParseUint(fields[i], 10, 64)
				if err != nil {
					h.t.Fatal(err)
				}
				return v
			}
		}
	}
	h.t.Fatal("no Icmp OutDestUnreachs in /proc/net/snmp")
	return 0
}

type rxBatch struct {
	bufs  [][]byte
	sizes []int
	srcs  []netip.AddrPort
}

func newRxBatch(n, size int) *rxBatch {
	b := &rxBatch{bufs: make([][]byte, n), sizes: make([]int, n), srcs: make([]netip.AddrPort, n)}
	for i := range b.bufs {
		b.bufs[i] = make([]byte, size)
	}
	return b
}

// readAll reads from c until it has len(want) datagrams, and checks them
// in order, and their source.
func readAll(t testing.TB, c underlay.Conn, want [][]byte, from netip.AddrPort) {
	t.Helper()
	// A lost datagram must fail the test, not hang it.
	watchdog := time.AfterFunc(time.Minute, func() { c.Close() })
	defer watchdog.Stop()
	b := newRxBatch(16, 65536)
	got := 0
	for got < len(want) {
		n, err := c.ReadBatch(b.bufs, b.sizes, b.srcs)
		if err != nil {
			t.Fatalf("received %d of %d datagrams: %v", got, len(want), err)
		}
		for i := range n {
			if got == len(want) {
				t.Fatalf("more than the %d datagrams sent", len(want))
			}
			if !bytes.Equal(b.bufs[i][:b.sizes[i]], want[got]) || b.srcs[i] != from {
				t.Fatalf("datagram %d: %d bytes from %v, want %d from %v", got, b.sizes[i], b.srcs[i], len(want[got]), from)
			}
			got++
		}
	}
}

// writeUntilResolved sends probe datagrams to dst until one goes out: the
// first wait for the next hop's MAC.
func writeUntilResolved(t testing.TB, c underlay.Conn, dst netip.AddrPort) {
	t.Helper()
	probe := [][]byte{[]byte("probe")}
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := c.WriteBatch(probe, []netip.AddrPort{dst})
		if n == 1 && err == nil {
			return
		}
		if !errors.Is(err, ErrNoNeighbour) {
			t.Fatalf("probe to %v: %v", dst, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("next hop of %v never resolved", dst)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestReceiveFromKernelSocket(t *testing.T) {
	for _, g := range []Guard{GuardTC, GuardSocket} {
		t.Run(g.String(), func(t *testing.T) {
			h := newHosts(t)
			laddr := netip.AddrPortFrom(addrA, tunnelPort)
			c := h.listen(h.a, "a0", laddr, Options{Guard: g})
			if got := c.Effective().Guard; got != g {
				t.Fatalf("guard %v, want %v", got, g)
			}
			from := netip.AddrPortFrom(addrB, 40000)
			s := h.socket(h.b, from)
			before := h.icmpUnreachSent(h.a)

			want := datagrams(300, func(i int) int { return (i * 37) % 1473 })
			go func() {
				for _, d := range want {
					s.WriteToUDPAddrPort(d, laddr)
				}
			}()
			readAll(t, c, want, from)
			if after := h.icmpUnreachSent(h.a); after != before {
				t.Errorf("host a sent %d ICMP unreachables for datagrams the ring took", after-before)
			}
			if st := c.Stats(); st.Received != uint64(len(want)) || st.Malformed+st.BadChecksum+st.Truncated != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestSendToKernelSocket(t *testing.T) {
	for _, gso := range []bool{false, true} {
		t.Run(fmt.Sprintf("gso=%v", gso), func(t *testing.T) { testSendToKernelSocket(t, gso) })
	}
}

func testSendToKernelSocket(t *testing.T, gso bool) {
	h := newHosts(t)
	c := h.listen(h.a, "a0", netip.AddrPortFrom(addrA, tunnelPort), Options{GSO: gso})
	dst := netip.AddrPortFrom(addrB, tunnelPort)
	s := h.socket(h.b, dst)
	writeUntilResolved(t, c, dst)

	// Runs of equal sizes, for GSO.
	want := datagrams(500, func(i int) int { return 1 + (i/7*53)%1472 })
	dsts := make([]netip.AddrPort, len(want))
	for i := range dsts {
		dsts[i] = dst
	}
	// The receiving kernel verifies our checksums: a wrong one would be
	// dropped there and show up as a missing datagram.
	go func() {
		for pos := 0; pos < len(want); pos += 50 {
			if n, err := c.WriteBatch(want[pos:pos+50], dsts[pos:pos+50]); n != 50 || err != nil {
				t.Errorf("WriteBatch: %d of 50: %v", n, err)
			}
		}
	}()
	buf := make([]byte, 2000)
	n, _, err := s.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "probe" {
		t.Fatalf("probe: %q %v", buf[:n], err)
	}
	s.SetReadDeadline(time.Now().Add(time.Minute))
	for i, w := range want {
		n, from, err := s.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], w) || from != netip.AddrPortFrom(addrA, tunnelPort) {
			t.Fatalf("datagram %d: %d bytes from %v, want %d from %v:%d", i, n, from, len(w), addrA, tunnelPort)
		}
	}

	// Too large, or not IPv4: refused, the rest sent.
	big := make([]byte, 1500-overhead+1)
	n2, err := c.WriteBatch([][]byte{big, []byte("ok"), []byte("v6")},
		[]netip.AddrPort{dst, dst, netip.MustParseAddrPort("[2001:db8::1]:8285")})
	var we *underlay.WriteError
	if n2 != 1 || !errors.As(err, &we) || we.Dropped != 2 {
		t.Fatalf("WriteBatch with two bad datagrams: sent %d, %v", n2, err)
	}
	if c.Effective().GSO != gso {
		t.Errorf("GSO %v after sending, asked for %v", c.Effective().GSO, gso)
	}
}

// Both ends on AF_PACKET: checksums built by one are verified in software
// by the other (the kernel does not vouch for them).
func TestAFPacketBothEnds(t *testing.T) {
	for _, ring := range rings {
		for _, gso := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/gso=%v", ring, gso), func(t *testing.T) { testAFPacketBothEnds(t, ring, gso) })
		}
	}
}

// rings are the kinds of receive ring the tests go through.
var rings = []Ring{RingV2, RingV3}

// testAFPacketBothEnds: with GSO, runs cross the veth as super-datagrams
// and are cut up by the receiving Conn.
func testAFPacketBothEnds(t *testing.T, ring Ring, gso bool) {
	h := newHosts(t)
	la, lb := netip.AddrPortFrom(addrA, tunnelPort), netip.AddrPortFrom(addrB, tunnelPort)
	a := h.listen(h.a, "a0", la, Options{GSO: gso, Ring: ring})
	b := h.listen(h.b, "b0", lb, Options{GSO: gso, Ring: ring})
	beforeA, beforeB := h.icmpUnreachSent(h.a), h.icmpUnreachSent(h.b)

	for _, dir := range []struct {
		from, to       *conn
		fromAddr, addr netip.AddrPort
	}{{a, b, la, lb}, {b, a, lb, la}} {
		writeUntilResolved(t, dir.from, dir.addr)
		readAll(t, dir.to, [][]byte{[]byte("probe")}, dir.fromAddr)
		want := datagrams(256, func(i int) int { return 1 + (i/5*131)%1472 })
		dsts := make([]netip.AddrPort, len(want))
		for i := range dsts {
			dsts[i] = dir.addr
		}
		go func() {
			for pos := 0; pos < len(want); pos += 64 {
				if n, err := dir.from.WriteBatch(want[pos:pos+64], dsts[pos:pos+64]); n != 64 || err != nil {
					t.Errorf("WriteBatch: %d of 64: %v", n, err)
				}
			}
		}()
		readAll(t, dir.to, want, dir.fromAddr)
	}
	if a.Stats().BadChecksum+b.Stats().BadChecksum != 0 {
		t.Errorf("checksums failed: a %+v b %+v", a.Stats(), b.Stats())
	}
	if h.icmpUnreachSent(h.a) != beforeA || h.icmpUnreachSent(h.b) != beforeB {
		t.Error("ICMP unreachables sent")
	}
}

// A socket with UDP GSO sends runs of datagrams as one super-datagram,
// which crosses veth whole: ReadBatch cuts it up again. A RingV2 reads
// them from the socket queue, too large for its slots.
func TestReceiveGSOSuperDatagrams(t *testing.T) {
	for _, ring := range rings {
		t.Run(ring.String(), func(t *testing.T) { testReceiveGSOSuperDatagrams(t, ring) })
	}
}

func testReceiveGSOSuperDatagrams(t *testing.T, ring Ring) {
	h := newHosts(t)
	laddr := netip.AddrPortFrom(addrA, tunnelPort)
	c := h.listen(h.a, "a0", laddr, Options{Ring: ring})
	from := netip.AddrPortFrom(addrB, tunnelPort)
	var s underlay.Conn
	if err := h.b.Do(func() (err error) { s, err = udp.Listen(from, udp.Options{GSO: true}); return err }); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.(udp.Configured).Effective().GSO {
		t.Skip("the kernel lacks UDP GSO")
	}
	// 40 of 1000 bytes then a short one, then 30 of 700: two runs.
	want := datagrams(71, func(i int) int {
		switch {
		case i < 40:
			return 1000
		case i == 40:
			return 123
		default:
			return 700
		}
	})
	dsts := make([]netip.AddrPort, len(want))
	for i := range dsts {
		dsts[i] = laddr
	}
	if n, err := s.WriteBatch(want, dsts); n != len(want) || err != nil {
		t.Fatalf("WriteBatch: %d: %v", n, err)
	}
	readAll(t, c, want, from)
	// The sender's batches make 2 or 3 super-datagrams, each > 2 KiB.
	if st := c.Stats(); ring == RingV2 && st.Copied < 2 || ring == RingV3 && st.Copied != 0 {
		t.Errorf("%d frames read from the socket queue, want the super-datagrams on a v2 ring, none on v3", st.Copied)
	}
}

// A lone datagram reaches ReadBatch as soon as it arrives, not when a
// ring block's timer expires: with a 10 s block timer, which a RingV3
// would wait for, it is read before the timer could have fired (the timer
// starts with the ring). BlockTimeout means nothing to a RingV2, so the
// test fails if the default ring waits for it.
func TestLoneDatagramWaitsForNoTimer(t *testing.T) {
	const timer = 10 * time.Second
	h := newHosts(t)
	laddr := netip.AddrPortFrom(addrA, tunnelPort)
	s := h.socket(h.b, netip.AddrPortFrom(addrB, 40000))
	start := time.Now()
	c := h.listen(h.a, "a0", laddr, Options{BlockTimeout: timer})
	got := make(chan error, 1)
	go func() {
		b := newRxBatch(4, 2048)
		n, err := c.ReadBatch(b.bufs, b.sizes, b.srcs)
		if err == nil && (n != 1 || string(b.bufs[0][:b.sizes[0]]) != "lone") {
			err = fmt.Errorf("read %d datagrams, %q first", n, b.bufs[0][:b.sizes[0]])
		}
		got <- err
	}()
	if _, err := s.WriteToUDPAddrPort([]byte("lone"), laddr); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited >= timer {
			t.Fatalf("the datagram was read %v after the ring was made: it waited for the block timer", waited)
		}
	case <-time.After(timer - time.Since(start)):
		t.Fatalf("a lone datagram not read within the block timer (%v)", timer)
	}
}

// A Group's Conns split the flows between them: every datagram arrives
// once, each flow in order on one Conn.
func TestFanout(t *testing.T) {
	h := newHosts(t)
	laddr := netip.AddrPortFrom(addrA, tunnelPort)
	var g Group
	conns := []*conn{h.listen(h.a, "a0", laddr, Options{Group: &g}), h.listen(h.a, "a0", laddr, Options{Group: &g})}
	if g.members != 2 {
		t.Fatalf("group has %d members", g.members)
	}
	const flows, perFlow = 16, 50
	var mu sync.Mutex
	got := map[netip.AddrPort][]byte{}
	byConn := map[netip.AddrPort]int{}
	total := 0
	done := make(chan struct{})
	for ci, c := range conns {
		go func() {
			b := newRxBatch(16, 2000)
			for {
				n, err := c.ReadBatch(b.bufs, b.sizes, b.srcs)
				if err != nil {
					return
				}
				mu.Lock()
				for i := range n {
					src := b.srcs[i]
					got[src] = append(got[src], b.bufs[i][0])
					if prev, ok := byConn[src]; ok && prev != ci {
						t.Errorf("flow %v on both Conns", src)
					}
					byConn[src] = ci
					if total++; total == flows*perFlow {
						close(done)
					}
				}
				mu.Unlock()
			}
		}()
	}
	for f := range flows {
		s := h.socket(h.b, netip.AddrPortFrom(addrB, uint16(41000+f)))
		for i := range perFlow {
			s.WriteToUDPAddrPort([]byte{byte(i), 0, 0, 0}, laddr)
		}
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("received %d of %d datagrams", total, flows*perFlow)
	}
	mu.Lock()
	defer mu.Unlock()
	used := map[int]bool{}
	for src, seqs := range got {
		used[byConn[src]] = true
		for i, s := range seqs {
			if int(s) != i {
				t.Fatalf("flow %v out of order: %v", src, seqs)
			}
		}
	}
	t.Logf("%d flows on %d of 2 Conns", len(got), len(used))
	if len(used) != 2 {
		t.Error("all flows on one Conn: no fanout")
	}
}

// Close removes the guard: the kernel answers with port unreachables
// again, the tc filter and the clsact qdisc it added are gone, the port
// is free.
func TestCloseRemovesGuard(t *testing.T) {
	for _, g := range []Guard{GuardTC, GuardSocket} {
		t.Run(g.String(), func(t *testing.T) {
			h := newHosts(t)
			laddr := netip.AddrPortFrom(addrA, tunnelPort)
			c := h.listen(h.a, "a0", laddr, Options{Guard: g})
			if g == GuardTC && !strings.Contains(h.filters(h.a, "a0"), guardTag(laddr)) {
				t.Errorf("no overlayd filter on a0 ingress:\n%s", h.filters(h.a, "a0"))
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			out, _ := h.a.Exec(context.Background(), "tc", "qdisc", "show", "dev", "a0")
			if strings.Contains(string(out), "clsact") {
				t.Errorf("clsact qdisc left on a0:\n%s", out)
			}
			h.waitPortFree(h.a, laddr)

			before := h.icmpUnreachSent(h.a)
			s := h.socket(h.b, netip.AddrPortFrom(addrB, 40000))
			for range 20 {
				s.WriteToUDPAddrPort([]byte("x"), laddr)
			}
			deadline := time.Now().Add(10 * time.Second)
			for h.icmpUnreachSent(h.a) == before {
				if time.Now().After(deadline) {
					t.Fatal("no port unreachable after Close: the guard is still there")
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// crash leaves a tc guard for laddr behind in n, as a killed overlayd would.
func (h *hosts) crash(n *netns.NS, iface string, laddr netip.AddrPort) {
	h.t.Helper()
	if err := n.Do(func() error {
		s, err := newShared(iface, laddr, GuardTC)
		if err != nil {
			return err
		}
		s.neighbours.stop()
		s.guard.(*tcGuard).sock.Close()
		s.nl.Close()
		return nil
	}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *hosts) filters(n *netns.NS, iface string) string {
	out, _ := n.Exec(context.Background(), "tc", "filter", "show", "dev", iface, "ingress")
	return string(out)
}

// guardTag is how tc shows laddr's guard.
func guardTag(laddr netip.AddrPort) string {
	return fmt.Sprintf("pref %d bpf chain 0 handle %#x", guardPriority, guardHandle(laddr))
}

// A tc filter left by a crashed overlayd is replaced by Listen and can be
// removed by RemoveStaleGuard; a clsact qdisc that was there before is
// kept.
func TestStaleGuard(t *testing.T) {
	h := newHosts(t)
	laddr := netip.AddrPortFrom(addrA, tunnelPort)
	if _, err := h.a.Exec(context.Background(), "tc", "qdisc", "add", "dev", "a0", "clsact"); err != nil {
		t.Fatal(err)
	}
	h.crash(h.a, "a0", laddr)
	c := h.listen(h.a, "a0", laddr, Options{Guard: GuardTC})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if f := h.filters(h.a, "a0"); strings.Contains(f, guardTag(laddr)) {
		t.Errorf("filter left after Close:\n%s", f)
	}
	out, _ := h.a.Exec(context.Background(), "tc", "qdisc", "show", "dev", "a0")
	if !strings.Contains(string(out), "clsact") {
		t.Error("Close removed a clsact qdisc it did not add")
	}

	// A crash again, then a UDP socket user cleans up.
	h.crash(h.a, "a0", laddr)
	if f := h.filters(h.a, "a0"); !strings.Contains(f, guardTag(laddr)) {
		t.Fatalf("no stale filter to remove:\n%s", f)
	}
	for range 2 { // the second time there is nothing to remove
		if err := h.a.Do(func() error { return RemoveStaleGuard("a0", laddr) }); err != nil {
			t.Fatal(err)
		}
	}
	if f := h.filters(h.a, "a0"); strings.Contains(f, guardTag(laddr)) {
		t.Errorf("RemoveStaleGuard left the filter:\n%s", f)
	}
}

// When the peer's MAC changes and the kernel's entry for it goes, the
// next hop is resolved again and traffic resumes.
func TestNeighbourChange(t *testing.T) {
	h := newHosts(t)
	c := h.listen(h.a, "a0", netip.AddrPortFrom(addrA, tunnelPort), Options{})
	dst := netip.AddrPortFrom(addrB, tunnelPort)
	s := h.socket(h.b, dst)
	writeUntilResolved(t, c, dst)
	buf := make([]byte, 100)
	s.SetReadDeadline(time.Now().Add(time.Minute))
	if _, _, err := s.ReadFromUDPAddrPort(buf); err != nil {
		t.Fatal(err)
	}

	h.ip(h.b, "link", "set", "b0", "address", "02:00:00:00:00:bb")
	h.ip(h.a, "neigh", "del", addrB.String(), "dev", "a0")
	// Frames to the old MAC are not for b0 any more; once the entry is
	// resolved again they are.
	received := make(chan struct{})
	go func() {
		for {
			n, _, err := s.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if string(buf[:n]) == "after" {
				close(received)
				return
			}
		}
	}()
	deadline := time.After(time.Minute)
	for {
		c.WriteBatch([][]byte{[]byte("after")}, []netip.AddrPort{dst})
		select {
		case <-received:
			if c.Stats().NoNeighbour == 0 {
				t.Log("(resolved before any datagram was held back)")
			}
			return
		case <-deadline:
			t.Fatalf("never resolved the new MAC: %+v", c.Stats())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestCloseUnblocksReadBatch(t *testing.T) {
	h := newHosts(t)
	c := h.listen(h.a, "a0", netip.AddrPortFrom(addrA, tunnelPort), Options{})
	errc := make(chan error, 1)
	go func() {
		b := newRxBatch(4, 100)
		_, err := c.ReadBatch(b.bufs, b.sizes, b.srcs)
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond) // let it block; not needed for correctness
	c.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadBatch after Close: %v, want net.ErrClosed", err)
	}
	b := newRxBatch(1, 10)
	if _, err := c.ReadBatch(b.bufs, b.sizes, b.srcs); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadBatch on a closed Conn: %v", err)
	}
	if _, err := c.WriteBatch([][]byte{{1}}, []netip.AddrPort{netip.AddrPortFrom(addrB, 1)}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteBatch on a closed Conn: %v", err)
	}
}

func TestListenErrors(t *testing.T) {
	h := newHosts(t)
	laddr := netip.AddrPortFrom(addrA, tunnelPort)
	for _, c := range []struct {
		iface string
		laddr netip.AddrPort
		opts  Options
	}{
		{"nosuch0", laddr, Options{}},
		{"lo", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), tunnelPort), Options{}}, // not Ethernet
		{"a0", netip.AddrPortFrom(addrA, 0), Options{}},
		{"a0", netip.MustParseAddrPort("[2001:db8::1]:8285"), Options{}},
		{"a0", laddr, Options{BlockSize: 100 << 10}},
		{"a0", laddr, Options{BatchSize: 5000}},
	} {
		err := h.a.Do(func() error {
			conn, err := Listen(c.iface, c.laddr, c.opts)
			if err == nil {
				conn.Close()
			}
			return err
		})
		if err == nil {
			t.Errorf("Listen(%s, %v, %+v) succeeded", c.iface, c.laddr, c.opts)
		}
	}
	// A group stays on one interface and address.
	var g Group
	h.listen(h.a, "a0", laddr, Options{Group: &g})
	if err := h.a.Do(func() error {
		_, err := Listen("a0", netip.AddrPortFrom(addrA, 8472), Options{Group: &g})
		return err
	}); err == nil {
		t.Error("a group joined on another address")
	}
}

// TestReadWriteAllocs sends a GSO super-datagram per batch: of 64-byte
// datagrams, it fits a RingV2 slot; of 1400-byte ones, it is read from
// the socket queue.
func TestReadWriteAllocs(t *testing.T) {
	for _, ring := range rings {
		for _, size := range []int{64, 1400} {
			t.Run(fmt.Sprintf("%v/%d", ring, size), func(t *testing.T) { testReadWriteAllocs(t, ring, size) })
		}
	}
}

func testReadWriteAllocs(t *testing.T, ring Ring, size int) {
	h := newSerialHosts(t)
	la, lb := netip.AddrPortFrom(addrA, tunnelPort), netip.AddrPortFrom(addrB, tunnelPort)
	a := h.listen(h.a, "a0", la, Options{GSO: true})
	b := h.listen(h.b, "b0", lb, Options{Ring: ring})
	writeUntilResolved(t, a, lb)
	readAll(t, b, [][]byte{[]byte("probe")}, la)

	const batch, runs = 16, 50
	bufs := datagrams(batch, func(int) int { return size })
	dsts := make([]netip.AddrPort, batch)
	for i := range dsts {
		dsts[i] = lb
	}
	rx := newRxBatch(batch, 2000)
	var failed error
	allocs := testing.AllocsPerRun(runs, func() {
		if n, err := a.WriteBatch(bufs, dsts); n != batch || err != nil {
			failed = fmt.Errorf("WriteBatch: %d: %w", n, err)
			return
		}
		for got := 0; got < batch; {
			n, err := b.ReadBatch(rx.bufs[got:], rx.sizes[got:], rx.srcs[got:])
			if err != nil {
				failed = err
				return
			}
			got += n
		}
	})
	if failed != nil {
		t.Fatal(failed)
	}
	if allocs != 0 {
		t.Errorf("a WriteBatch and ReadBatch of %d datagrams allocate %v times", batch, allocs)
	}
}

// BenchmarkWriteReadBatch sends batches of 64 datagrams from a to b, both
// on AF_PACKET, and reads them there.
func BenchmarkWriteReadBatch(b *testing.B) {
	for _, ring := range rings {
		for _, size := range []int{64, 1400} {
			b.Run(fmt.Sprintf("%v/%d", ring, size), func(b *testing.B) { benchWriteRead(b, ring, size) })
		}
	}
}

func benchWriteRead(b *testing.B, ring Ring, size int) {
	h := newSerialHosts(b)
	la, lb := netip.AddrPortFrom(addrA, tunnelPort), netip.AddrPortFrom(addrB, tunnelPort)
	src := h.listen(h.a, "a0", la, Options{})
	dst := h.listen(h.b, "b0", lb, Options{Ring: ring})
	writeUntilResolved(b, src, lb)
	readAll(b, dst, [][]byte{[]byte("probe")}, la)

	const batch = 64
	bufs := datagrams(batch, func(int) int { return size })
	dsts := make([]netip.AddrPort, batch)
	for i := range dsts {
		dsts[i] = lb
	}
	rx := newRxBatch(batch, 2000)
	b.ReportAllocs()
	b.SetBytes(batch * int64(size))
	for b.Loop() {
		if n, err := src.WriteBatch(bufs, dsts); err != nil {
			b.Fatalf("WriteBatch: %d: %v", n, err)
		}
		for got := 0; got < batch; {
			n, err := dst.ReadBatch(rx.bufs[got:], rx.sizes[got:], rx.srcs[got:])
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	}
}

// BenchmarkGuard measures what each Guard costs the receiving kernel: b
// sends batches of 64-byte datagrams to a, where a Conn drains its ring.
// With veth the receive path runs in the sender's system calls, so ns/op
// is the time to push one batch through both kernels, guard included.
func BenchmarkGuard(b *testing.B) {
	for _, g := range []Guard{GuardTC, GuardSocket} {
		b.Run(g.String(), func(b *testing.B) {
			h := newSerialHosts(b)
			la := netip.AddrPortFrom(addrA, tunnelPort)
			c := h.listen(h.a, "a0", la, Options{Guard: g})
			go func() {
				rx := newRxBatch(64, 2000)
				for {
					if _, err := c.ReadBatch(rx.bufs, rx.sizes, rx.srcs); err != nil {
						return
					}
				}
			}()
			var s underlay.Conn
			if err := h.b.Do(func() (err error) {
				s, err = udp.Listen(netip.AddrPortFrom(addrB, 40000), udp.Options{})
				return err
			}); err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			const batch = 64
			bufs := datagrams(batch, func(int) int { return 64 })
			dsts := make([]netip.AddrPort, batch)
			for i := range dsts {
				dsts[i] = la
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.WriteBatch(bufs, dsts); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/datagram")
		})
	}
}

// While the interface is down the socket has an error pending (ENETDOWN),
// which makes poll return at once until it is read: ReadBatch must clear
// it and sleep, not spin, and receive again once the interface is up.
func TestInterfaceDownNoSpin(t *testing.T) {
	h := newHosts(t)
	laddr := netip.AddrPortFrom(addrA, tunnelPort)
	c := h.listen(h.a, "a0", laddr, Options{})
	got := make(chan error, 1)
	go func() {
		b := newRxBatch(4, 2048)
		n, err := c.ReadBatch(b.bufs, b.sizes, b.srcs)
		for i := range n {
			if d := b.bufs[i][:b.sizes[i]]; err == nil && string(d) != "up again" {
				err = fmt.Errorf("read %q", d)
			}
		}
		got <- err
	}()
	h.ip(h.a, "link", "set", "a0", "down")
	time.Sleep(100 * time.Millisecond) // for ReadBatch to see the error; spinning, it would wake thousands of times
	before := c.rx.wakeups.Load()
	time.Sleep(200 * time.Millisecond)
	if woke := c.rx.wakeups.Load() - before; woke > 10 {
		t.Errorf("ReadBatch woke %d times in 200 ms with the interface down: it spins", woke)
	}
	h.ip(h.a, "link", "set", "a0", "up")
	s := h.socket(h.b, netip.AddrPortFrom(addrB, 40000))
	// Until the link is up on both ends a datagram may be lost: resend.
	for done := false; !done; {
		if _, err := s.WriteToUDPAddrPort([]byte("up again"), laddr); err != nil && !errors.Is(err, unix.ENETUNREACH) {
			t.Fatal(err)
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
			done = true
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// With jumbo frames a RingV2's slots grow with the MTU: datagrams of up
// to the MTU arrive in the ring, none through the socket queue.
func TestJumboFrames(t *testing.T) {
	h := newHosts(t)
	h.ip(h.a, "link", "set", "a0", "mtu", "9000")
	h.ip(h.b, "link", "set", "b0", "mtu", "9000")
	laddr := netip.AddrPortFrom(addrA, tunnelPort)
	c := h.listen(h.a, "a0", laddr, Options{})
	from := netip.AddrPortFrom(addrB, 40000)
	s := h.socket(h.b, from)
	want := datagrams(40, func(i int) int { return 9000 - 28 - i*200 })
	go func() {
		for _, d := range want {
			s.WriteToUDPAddrPort(d, laddr)
		}
	}()
	readAll(t, c, want, from)
	if st := c.Stats(); st.Copied != 0 || st.Truncated != 0 {
		t.Errorf("%d datagrams read from the socket queue, %d truncated: the slots do not hold the MTU", st.Copied, st.Truncated)
	}
}

// TestBusyPoll receives datagrams that come one at a time, each sent once
// the last was read, with the busy-poll window open: a reader that finds
// the ring empty watches it, and every datagram arrives intact.
func TestBusyPoll(t *testing.T) {
	h := newHosts(t)
	laddr := netip.AddrPortFrom(addrA, tunnelPort)
	c := h.listen(h.a, "a0", laddr, Options{BusyPoll: time.Second})
	c.rx.win.Sleeping()
	c.rx.win.Woke() // a short sleep: the window opens, to 250 ms
	from := netip.AddrPortFrom(addrB, 40000)
	s := h.socket(h.b, from)
	want := datagrams(50, func(i int) int { return 1 + i*29 })
	read := make(chan struct{}, len(want)) // the reader never blocks on it
	go func() {
		defer close(read)
		for _, d := range want {
			readAll(t, c, [][]byte{d}, from)
			read <- struct{}{}
		}
	}()
	for i, d := range want {
		if _, err := s.WriteToUDPAddrPort(d, laddr); err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if _, ok := <-read; !ok {
			t.Fatalf("the reader stopped at datagram %d", i)
		}
	}
	// The window is far longer than a round trip here: looks at the ring
	// caught datagrams, or polling is broken.
	if st := c.BusyPollStats(); st.Caught == 0 {
		t.Errorf("no ReadBatch caught a datagram by polling (%+v)", st)
	}
}

// TestCloseEndsBusyPoll closes a Conn whose ReadBatch watches its ring
// with a window far longer than any test: Close must end the watch.
func TestCloseEndsBusyPoll(t *testing.T) {
	h := newHosts(t)
	c := h.listen(h.a, "a0", netip.AddrPortFrom(addrA, tunnelPort), Options{BusyPoll: time.Hour})
	c.rx.win.Sleeping()
	c.rx.win.Woke() // a short sleep: the window opens, to a quarter hour
	errc := make(chan error, 1)
	go func() {
		b := newRxBatch(4, 100)
		_, err := c.ReadBatch(b.bufs, b.sizes, b.srcs)
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond) // let it watch; not needed for correctness
	c.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadBatch after Close: %v, want net.ErrClosed", err)
	}
}

// The socket stays out of Go's netpoller: registered there, every frame
// in and every send completed would wake the netpoller's thread. The test
// reads the runtime's epoll set from /proc; a pipe, which the runtime does
// register, shows that the reading works.
func TestSocketOutOfNetpoller(t *testing.T) {
	h := newHosts(t)
	c := h.listen(h.a, "a0", netip.AddrPortFrom(addrA, tunnelPort), Options{})
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	watched := epollTargets(t)
	if !watched[int(r.Fd())] {
		t.Fatalf("the runtime's epoll set %v lacks the pipe's fd %d: cannot tell", watched, r.Fd())
	}
	if watched[c.fd] {
		t.Errorf("the packet socket (fd %d) is in Go's netpoller", c.fd)
	}
}

// epollTargets returns the descriptors that this process's epoll
// instances watch, from /proc/self/fdinfo.
func epollTargets(t *testing.T) map[int]bool {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	watched := make(map[int]bool)
	for _, fd := range fds {
		if link, err := os.Readlink("/proc/self/fd/" + fd.Name()); err != nil || link != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + fd.Name())
		if err != nil {
			continue // closed since
		}
		for _, line := range strings.Split(string(info), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "tfd:" {
				if n, err := strconv.Atoi(f[1]); err == nil {
					watched[n] = true
				}
			}
		}
	}
	return watched
}

// A send asleep in poll(2) with the socket's buffer full ends when the
// Conn closes, and does not spin meanwhile. The packet socket's buffer is
// hard to fill through a veth, so the Conn's writer waits on one end of a
// full socket pair instead, with the Conn's own Waker; Close must wake it
// before it takes the lock the send holds.
func TestCloseWakesFullWriter(t *testing.T) {
	h := newHosts(t)
	c := h.listen(h.a, "a0", netip.AddrPortFrom(addrA, tunnelPort), Options{})
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	c.txConn.poll = c.rx.wake.Set(fds[0], unix.POLLOUT)
	tries := 0
	full := make(chan struct{})
	fill := func(uintptr) bool {
		if tries++; tries > 1 {
			return false // called again: the writer did not sleep
		}
		for {
			if _, err := unix.Write(fds[0], make([]byte, 512)); err == unix.EAGAIN {
				close(full)
				return false // full: wait until writable
			} else if err != nil {
				t.Error(err)
				return true
			}
		}
	}
	errc := make(chan error, 1)
	go func() {
		c.tx.mu.Lock() // as WriteBatch holds it
		defer c.tx.mu.Unlock()
		errc <- c.txConn.Write(fill)
	}()
	<-full
	// A writer that polled in a loop instead of sleeping would call fill
	// again within this time.
	time.Sleep(20 * time.Millisecond)
	c.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("send after Close: %v, want net.ErrClosed", err)
	}
	if tries != 1 {
		t.Errorf("the writer tried %d times, want 1: it did not sleep until Close", tries)
	}
}
