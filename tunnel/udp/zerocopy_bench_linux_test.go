package udp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The emulated hosts of BenchmarkZerocopy. The sender also routes
// zcNowhere's subnet into a sink (see zcAddSink): a stand-in for a NIC that
// transmits from the pinned pages by DMA, where zerocopy pays at best.
var (
	zcSenderAddr   = netip.MustParsePrefix("198.18.0.1/24")
	zcReceiverAddr = netip.MustParsePrefix("198.18.0.2/24")
	zcSinkAddr     = netip.MustParsePrefix("198.18.1.1/24")
	zcNowhere      = netip.MustParseAddrPort("198.18.1.2:8285")
)

// BenchmarkZerocopy sends 64768-byte UDP GSO messages of 1472-byte
// segments, copied or with MSG_ZEROCOPY, from one network namespace:
//
//   - veth: to a socket with UDP_GRO in a second namespace over a veth
//     pair, overlayd's emulated-host path. The kernel copies zerocopy
//     frags anyway before a local socket gets them (skb_orphan_frags_rx).
//   - sink: into a device that frees every packet unread, so nothing is
//     copied: the best case, a NIC without its driver's cost.
//
// The modes are copy (plain sendmsg with UDP_SEGMENT), zerocopy-wait (each
// send waits for the previous one's completion, as a forwarder reusing one
// batch must) and zerocopy-ring8 (eight messages' buffers in flight).
//
// Besides ns/op and MB/s it reports the CPU time (getrusage user + system)
// per message of the process (cpu-ns/op: sender, receiver, and the softirq
// work done on their threads, which for the veth is most of the receive
// path, but not what ksoftirqd does) and of the sending thread alone
// (tx-cpu-ns/op); the share of zerocopy sends that the kernel copied
// anyway (copied-%); and the share of bytes the receiver had got when the
// clock stopped (rx-%: UDP drops what the receiver cannot take).
//
// It needs root. Run it several times and compare the modes with
// benchstat:
//
//	go test -run '^$' -bench Zerocopy -benchmem -count 5 ./tunnel/udp >zc.txt
//	benchstat -col /mode zc.txt
func BenchmarkZerocopy(b *testing.B) {
	topo := newZCTopology(b)
	paths := []struct {
		name string
		veth bool
	}{{"veth", true}, {"sink", false}}
	modes := []struct {
		name     string
		zerocopy bool
		ring     int
	}{{"copy", false, 1}, {"zerocopy-wait", true, 1}, {"zerocopy-ring8", true, 8}}

	for _, path := range paths {
		for _, layout := range zcLayouts {
			for _, mode := range modes {
				b.Run(fmt.Sprintf("path=%s/layout=%s/mode=%s", path.name, layout.name, mode.name), func(b *testing.B) {
					var rx *zcReceiver
					dst := zcNowhere
					if path.veth {
						rx = topo.receive(b)
						dst = rx.addr
					}
					s := topo.sender(b, dst, layout, mode.ring, mode.zerocopy)
					benchmarkSends(b, s, rx)
				})
			}
		}
	}
}

// benchmarkSends runs s for b.N messages and reports the metrics of
// BenchmarkZerocopy. rx may be nil.
func benchmarkSends(b *testing.B, s *zcSender, rx *zcReceiver) {
	// Probe once, outside the clock: a layout the kernel refuses is a
	// finding, not a failure.
	if err := s.send(); errors.Is(err, unix.EMSGSIZE) {
		b.Skipf("MSG_ZEROCOPY refuses a message that needs more frags than MAX_SKB_FRAGS (%s): %v",
			maxSKBFrags(), err)
	} else if err != nil {
		b.Fatal(err)
	}
	if err := s.drain(); err != nil {
		b.Fatal(err)
	}

	// The sending goroutine keeps its thread, so that RUSAGE_THREAD
	// measures the sender alone.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	b.SetBytes(zcMsgBytes)
	b.ReportAllocs()
	var rxStart int64
	if rx != nil {
		rxStart = rx.bytes.Load()
	}
	done, copied := s.done, s.copied
	procStart, threadStart := cpuTime(unix.RUSAGE_SELF), cpuTime(unix.RUSAGE_THREAD)
	ops := 0
	for b.Loop() {
		if err := s.send(); err != nil {
			b.Fatal(err)
		}
		ops++
	}
	// b.Loop has stopped the clock; the last ring's completions still
	// count in the CPU time.
	if err := s.drain(); err != nil {
		b.Fatal(err)
	}
	procEnd, threadEnd := cpuTime(unix.RUSAGE_SELF), cpuTime(unix.RUSAGE_THREAD)

	b.ReportMetric(float64(procEnd-procStart)/float64(ops), "cpu-ns/op")
	b.ReportMetric(float64(threadEnd-threadStart)/float64(ops), "tx-cpu-ns/op")
	if s.zerocopy {
		if n := s.done - done; n > 0 {
			b.ReportMetric(100*float64(s.copied-copied)/float64(n), "copied-%")
		}
	}
	if rx != nil {
		b.ReportMetric(100*float64(rx.bytes.Load()-rxStart)/float64(ops*zcMsgBytes), "rx-%")
	}
}

// cpuTime returns the user and system time of who, in nanoseconds.
func cpuTime(who int) int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(who, &ru); err != nil {
		panic(fmt.Sprintf("getrusage: %v", err))
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// zcTopology is two emulated hosts in network namespaces of their own,
// joined by a veth pair.
type zcTopology struct {
	tx, rx *zcNetns
}

// newZCTopology skips the benchmark unless it runs as root, and otherwise
// builds the hosts; they vanish when it ends.
func newZCTopology(b *testing.B) *zcTopology {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root: creates network namespaces and veth pairs")
	}
	t := &zcTopology{tx: newZCNetns(b), rx: newZCNetns(b)}

	// The veth's peer is created straight in the receiver's namespace,
	// named by a descriptor of it opened from its thread.
	var rxNS int
	var err error
	t.rx.Do(func() { rxNS, err = unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0) })
	if err != nil {
		b.Fatalf("open the receiver's namespace: %v", err)
	}
	defer unix.Close(rxNS)

	t.tx.Do(func() {
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: "zc0"},
			PeerName:      "zc1",
			PeerNamespace: netlink.NsFd(rxNS),
		}
		if err = netlink.LinkAdd(veth); err != nil {
			err = fmt.Errorf("add veth: %w", err)
			return
		}
		if err = zcLinkUp("zc0", zcSenderAddr); err != nil {
			return
		}
		err = zcAddSink("zc2", "zc3", zcSinkAddr, zcNowhere.Addr())
	})
	if err != nil {
		b.Fatal(err)
	}
	t.rx.Do(func() { err = zcLinkUp("zc1", zcReceiverAddr) })
	if err != nil {
		b.Fatal(err)
	}

	// Permanent neighbour entries on both ends: no ARP, whose queue
	// would drop the first messages of a run.
	var txMAC, rxMAC net.HardwareAddr
	t.tx.Do(func() { txMAC, err = zcMAC("zc0") })
	if err == nil {
		t.rx.Do(func() { rxMAC, err = zcMAC("zc1") })
	}
	if err == nil {
		t.tx.Do(func() { err = zcNeighbour("zc0", zcReceiverAddr.Addr(), rxMAC) })
	}
	if err == nil {
		t.rx.Do(func() { err = zcNeighbour("zc1", zcSenderAddr.Addr(), txMAC) })
	}
	if err != nil {
		b.Fatal(err)
	}
	return t
}

// zcMAC returns the hardware address of the link name.
func zcMAC(name string) (net.HardwareAddr, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", name, err)
	}
	return link.Attrs().HardwareAddr, nil
}

// zcNeighbour adds a permanent neighbour entry for ip at mac on the link
// name.
func zcNeighbour(name string, ip netip.Addr, mac net.HardwareAddr) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	neigh := &netlink.Neigh{
		LinkIndex:    link.Attrs().Index,
		Family:       netlink.FAMILY_V4,
		State:        netlink.NUD_PERMANENT,
		IP:           ip.AsSlice(),
		HardwareAddr: mac,
	}
	if err := netlink.NeighAdd(neigh); err != nil {
		return fmt.Errorf("add neighbour %v on %s: %w", ip, name, err)
	}
	return nil
}

// zcLinkUp gives the link name the address addr and brings it up.
func zcLinkUp(name string, addr netip.Prefix) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	ipnet := &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), 32)}
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: ipnet}); err != nil {
		return fmt.Errorf("address %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

// zcAddSink makes a veth pair, name and peer, whose name end has the
// address addr, a permanent neighbour entry for dst and an egress queue of
// length 0 (pfifo, limit txqueuelen = 0), so that every packet sent to dst
// is dropped at the queue and freed without its data being read or copied.
// The kernel here lacks the dummy device, which would do the same.
func zcAddSink(name, peer string, addr netip.Prefix, dst netip.Addr) error {
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, TxQLen: 0}, PeerName: peer}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s: %w", name, err)
	}
	peerLink, err := netlink.LinkByName(peer)
	if err != nil {
		return fmt.Errorf("find %s: %w", peer, err)
	}
	if err := netlink.LinkSetUp(peerLink); err != nil {
		return fmt.Errorf("set %s up: %w", peer, err)
	}
	if err := zcLinkUp(name, addr); err != nil {
		return err
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if link.Attrs().TxQLen != 0 {
		return fmt.Errorf("%s has txqueuelen %d, want 0", name, link.Attrs().TxQLen)
	}
	drop := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT},
		QdiscType:  "pfifo", // without options, its limit is the txqueuelen
	}
	if err := netlink.QdiscAdd(drop); err != nil {
		return fmt.Errorf("add pfifo to %s: %w", name, err)
	}
	return zcNeighbour(name, dst, net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02})
}

// sender opens a zcSender in the sending host, closed when b ends.
func (t *zcTopology) sender(b *testing.B, dst netip.AddrPort, layout zcLayout, ring int, zerocopy bool) *zcSender {
	b.Helper()
	var fd int
	var err error
	t.tx.Do(func() { fd, err = zcSocket(netip.AddrPortFrom(zcSenderAddr.Addr(), 0)) })
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(fd) })
	s, err := newZCSender(fd, dst, layout, ring, zerocopy)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// zcReceiver drains a UDP_GRO socket in the receiving host, counting the
// bytes it gets.
type zcReceiver struct {
	addr  netip.AddrPort
	bytes atomic.Int64
}

// receive starts a zcReceiver, stopped when b ends.
func (t *zcTopology) receive(b *testing.B) *zcReceiver {
	b.Helper()
	var conn *net.UDPConn
	var err error
	t.rx.Do(func() {
		conn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(zcReceiverAddr.Addr(), 0)))
	})
	if err != nil {
		b.Fatal(err)
	}
	rc, err := conn.SyscallConn()
	if err == nil {
		err = control(rc, func(fd int) error {
			if _, err := setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, DefaultBuffer); err != nil {
				return err
			}
			return unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1)
		})
	}
	if err != nil {
		conn.Close()
		b.Fatalf("configure the receiver: %v", err)
	}
	r := &zcReceiver{addr: conn.LocalAddr().(*net.UDPAddr).AddrPort()}

	const msgs = 8
	mm := make([]unix.Mmsghdr, msgs)
	iovs := make([]unix.Iovec, msgs)
	for i := range mm {
		setIovec(&iovs[i], make([]byte, groBufSize))
		mm[i].Hdr.Iov = &iovs[i]
		mm[i].Hdr.SetIovlen(1)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		// Returns once conn is closed; any other error ends the count.
		rc.Read(func(fd uintptr) bool {
			for {
				n, errno := recvmmsg(fd, mm)
				if errno == unix.EINTR {
					continue
				}
				if errno != 0 {
					return errno != unix.EAGAIN
				}
				var got int64
				for _, m := range mm[:n] {
					got += int64(m.Len)
				}
				r.bytes.Add(got)
			}
		})
	}()
	b.Cleanup(func() {
		conn.Close()
		<-stopped
	})
	return r
}

// zcNetns is a fresh, anonymous network namespace held by one locked OS
// thread; Do runs functions there. Sockets and devices made in it stay in
// it, usable from any goroutine. With no name it cannot clash with another
// run's, and it dies with its thread and the last socket opened in it, so
// nothing outlives the benchmark.
type zcNetns struct {
	calls chan func()
}

func newZCNetns(b *testing.B) *zcNetns {
	b.Helper()
	ns := &zcNetns{calls: make(chan func())}
	started := make(chan error, 1)
	go func() {
		// Never unlocked: the runtime retires the thread when this
		// goroutine returns, instead of reusing it in the namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			started <- err
			return
		}
		started <- nil
		for f := range ns.calls {
			f()
		}
	}()
	if err := <-started; err != nil {
		b.Fatalf("unshare network namespace: %v", err)
	}
	b.Cleanup(func() { close(ns.calls) })
	return ns
}

func (ns *zcNetns) Do(f func()) {
	done := make(chan struct{})
	ns.calls <- func() {
		defer close(done)
		f()
	}
	<-done
}
