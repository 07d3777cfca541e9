package udp

// The MSG_ZEROCOPY experiment (issue 3): does sending UDP GSO messages with
// MSG_ZEROCOPY beat copying them? This file holds the sender under test and
// the tests that need no root; zerocopy_bench_linux_test.go measures it
// between two network namespaces.
//
// How MSG_ZEROCOPY works (Documentation/networking/msg_zerocopy.rst): with
// SO_ZEROCOPY set on the socket, a send with MSG_ZEROCOPY pins the caller's
// pages and hangs them off the skb as frags instead of copying them. The
// caller must not touch the buffers until the kernel says it is done: a
// notification on the socket's error queue (recvmsg with MSG_ERRQUEUE)
// whose sock_extended_err has origin SO_EE_ORIGIN_ZEROCOPY and covers the
// send ids ee_info through ee_data, counted per successful send from 0.
// Code SO_EE_CODE_ZEROCOPY_COPIED says the kernel copied the data after
// all, as it does for every packet delivered to a local socket
// (skb_orphan_frags_rx). The kernel documentation says zerocopy "is
// generally only effective at writes over around 10 KB".
//
// Findings (Linux 6.18, MAX_SKB_FRAGS 17, 2 shared cores; medians of 8
// runs, benchstat p <= 0.01 unless marked ~), verdict: do not use it.
//
//   - overlayd's layout, 44 packets in separate buffers, cannot be sent
//     with MSG_ZEROCOPY at all: one frag per buffer exceeds MAX_SKB_FRAGS
//     and sendmsg fails with EMSGSIZE (TestZerocopyScatteredLimit).
//   - veth to a socket in another namespace: 100% of the sends are
//     COPIED; process CPU per 64 KB message 17.5 us copying, 31-32 us
//     with zerocopy (+80%), and the send rate drops by 40-45%.
//   - sink (no copy anywhere, a NIC's best case), same 44 iovecs in one
//     buffer: 8.2 us copying, 12.0 us zerocopy (+46%): pinning page by
//     page, one iovec at a time, costs more than copying 1472 bytes.
//   - sink, one 64 KB iovec: 6.5 us copying, 5.8-5.9 us zerocopy (-10%
//     with a ring of 8 in flight, ~ when waiting for each send).

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The experiment's message: the most 1472-byte segments (an MTU-1500 UDP
// datagram's payload) that fit in one GSO message, 44 of them, 64768 bytes.
const (
	zcSegSize  = 1472
	zcSegs     = maxGSOPayload / zcSegSize
	zcMsgBytes = zcSegs * zcSegSize
)

// A zcLayout says where a message's data lies in memory.
type zcLayout struct {
	name string
	// buffers returns the buffers of one message, one iovec each,
	// zcMsgBytes in all.
	buffers func() [][]byte
}

var zcLayouts = []zcLayout{
	// The forwarder's own layout (tunnel/forward.go): every packet at
	// offset 64 (Headroom) of its own 64 KiB + 64 buffer, gathered by
	// iovec. Each segment needs at least one frag of its own.
	{"scattered", func() [][]byte {
		const headroom, slot = 64, 64 + 65535
		return cutSegments(patterned(zcSegs*slot), slot, headroom)
	}},
	// The same 44 iovecs, but back to back in one buffer: their pinned
	// pages coalesce into 16 frags, which even MAX_SKB_FRAGS = 17 takes.
	// A forwarder would have to lay its packets out so.
	{"contiguous", func() [][]byte {
		return cutSegments(patterned(zcMsgBytes), zcSegSize, 0)
	}},
	// One iovec over the whole message, whose pages the kernel pins in
	// one go: zerocopy's best case, and not overlayd's, whose packets are
	// separate buffers.
	{"one-iovec", func() [][]byte {
		return [][]byte{patterned(zcMsgBytes)}
	}},
}

func zcLayoutNamed(name string) zcLayout {
	for _, l := range zcLayouts {
		if l.name == name {
			return l
		}
	}
	panic("no layout " + name)
}

// patterned returns n bytes of a pattern: real pages, not the shared zero
// page, and data that a test can check.
func patterned(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// cutSegments returns the zcSegs segments of zcSegSize bytes at offset off
// of every stride bytes of slab.
func cutSegments(slab []byte, stride, off int) [][]byte {
	segs := make([][]byte, zcSegs)
	for i := range segs {
		segs[i] = slab[i*stride+off:][:zcSegSize:zcSegSize]
	}
	return segs
}

// zcSender sends one UDP GSO message per call, rotating over a ring of
// messages, each with its own buffers, with or without MSG_ZEROCOPY. A
// zerocopy message's buffers are reused only once its completion is in:
// with a ring of one, every send waits for the previous one, as a forwarder
// that reuses its batch at once would have to.
//
// The socket is blocking, so the experiment measures the kernel's send path
// and not the netpoller. Sends allocate nothing.
type zcSender struct {
	fd       int
	zerocopy bool
	ring     []zcMessage
	next     int // ring index of the next send

	sends  uint32 // successful zerocopy sends: the id of the next one
	done   uint64 // sends completed, as notifications count them
	copied uint64 // of those, sends the kernel copied after all

	errHdr  unix.Msghdr
	errCtrl [128]byte
	poll    [1]unix.PollFd
}

// zcMessage is one prebuilt sendmsg: zcSegs iovecs and a UDP_SEGMENT cmsg.
type zcMessage struct {
	hdr      unix.Msghdr
	name     unix.RawSockaddrInet4
	iovs     []unix.Iovec
	ctrl     [ctrlSpace]byte
	id       uint32 // zerocopy send id, while inFlight
	inFlight bool   // the kernel may still read the buffers
}

// newZCSender returns a sender of ringSize messages to dst on fd, laid out
// by layout. It sets SO_ZEROCOPY when zerocopy is asked for.
func newZCSender(fd int, dst netip.AddrPort, layout zcLayout, ringSize int, zerocopy bool) (*zcSender, error) {
	if zerocopy {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ZEROCOPY, 1); err != nil {
			return nil, fmt.Errorf("set SO_ZEROCOPY: %w", err)
		}
	}
	s := &zcSender{fd: fd, zerocopy: zerocopy, ring: make([]zcMessage, ringSize)}
	for i := range s.ring {
		m := &s.ring[i]
		bufs := layout.buffers()
		m.iovs = make([]unix.Iovec, len(bufs))
		for j, buf := range bufs {
			setIovec(&m.iovs[j], buf)
		}
		putSockaddr(&m.name, dst)
		m.hdr.Name = (*byte)(unsafe.Pointer(&m.name))
		m.hdr.Namelen = unix.SizeofSockaddrInet4
		m.hdr.Iov = &m.iovs[0]
		m.hdr.SetIovlen(len(m.iovs))
		m.hdr.Control = &m.ctrl[0]
		m.hdr.SetControllen(putSegmentCmsg(m.ctrl[:], zcSegSize))
	}
	s.errHdr.Control = &s.errCtrl[0]
	s.poll[0] = unix.PollFd{Fd: int32(fd)} // no events: POLLERR is always reported
	return s, nil
}

// send sends the next message of the ring, first waiting until the kernel
// is done with its buffers.
func (s *zcSender) send() error {
	m := &s.ring[s.next]
	s.next = (s.next + 1) % len(s.ring)
	flags := 0
	if s.zerocopy {
		flags = unix.MSG_ZEROCOPY
		if err := s.await(m); err != nil {
			return err
		}
	}
	for {
		_, _, errno := unix.Syscall(unix.SYS_SENDMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&m.hdr)), uintptr(flags))
		switch {
		case errno == 0:
			if s.zerocopy {
				m.id, m.inFlight = s.sends, true
				s.sends++
			}
			return nil
		case errno == unix.EINTR:
		case errno == unix.ENOBUFS && s.pending():
			// Too many notifications pending (optmem_max): take
			// one and try again.
			if err := s.reap(); err != nil {
				return err
			}
		default:
			return fmt.Errorf("sendmsg %d bytes: %w", zcMsgBytes, errno)
		}
	}
}

// await returns once the kernel has released m's buffers. Notifications
// are read only when a buffer is wanted back, so that one read may take
// several sends' coalesced into one; as every message is awaited before
// it is sent again, no more than the ring's worth are ever pending.
func (s *zcSender) await(m *zcMessage) error {
	for m.inFlight {
		if err := s.reap(); err != nil {
			return err
		}
	}
	return nil
}

// reap reads one notification from the error queue, waiting for it if
// none is there, and releases the messages it covers.
func (s *zcSender) reap() error {
	for {
		s.errHdr.SetControllen(len(s.errCtrl))
		_, _, errno := unix.Syscall(unix.SYS_RECVMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.errHdr)), unix.MSG_ERRQUEUE)
		switch errno {
		case 0:
		case unix.EAGAIN:
			// The error queue never blocks a read; poll reports
			// POLLERR once it holds something.
			if _, err := unix.Poll(s.poll[:], -1); err != nil && !errors.Is(err, unix.EINTR) {
				return fmt.Errorf("poll for zerocopy notifications: %w", err)
			}
			continue
		case unix.EINTR:
			continue
		default:
			return fmt.Errorf("recvmsg MSG_ERRQUEUE: %w", errno)
		}
		lo, hi, copied, ok := zerocopyCompletion(s.errCtrl[:s.errHdr.Controllen])
		if !ok {
			return errors.New("recvmsg MSG_ERRQUEUE: not a zerocopy notification")
		}
		n := uint64(hi-lo) + 1
		s.done += n
		if copied {
			s.copied += n
		}
		s.release(lo, hi)
		return nil
	}
}

// release marks the messages sent with ids lo through hi as done. Only the
// ring's messages can be in flight, so it walks those, not the range.
func (s *zcSender) release(lo, hi uint32) {
	for i := range s.ring {
		m := &s.ring[i]
		if m.inFlight && m.id-lo <= hi-lo {
			m.inFlight = false
		}
	}
}

// pending reports whether a notification is due: a message is in flight.
func (s *zcSender) pending() bool {
	for i := range s.ring {
		if s.ring[i].inFlight {
			return true
		}
	}
	return false
}

// drain waits for every message in flight.
func (s *zcSender) drain() error {
	for i := range s.ring {
		if err := s.await(&s.ring[i]); err != nil {
			return err
		}
	}
	return nil
}

// sizeofSockExtendedErr is the size of struct sock_extended_err, which
// golang.org/x/sys/unix declares without a Sizeof constant.
const sizeofSockExtendedErr = int(unsafe.Sizeof(unix.SockExtendedErr{}))

// zerocopyCompletion decodes the control messages of a MSG_ERRQUEUE read
// that notifies finished MSG_ZEROCOPY sends: ids lo through hi (mod 2^32),
// and whether the kernel copied their data anyway. A notification may
// cover sends some of which were copied and some not; the kernel reports
// the first one's code for all. It allocates nothing.
func zerocopyCompletion(ctrl []byte) (lo, hi uint32, copied, ok bool) {
	for len(ctrl) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[0]))
		n := int(h.Len)
		if n < unix.SizeofCmsghdr || n > len(ctrl) {
			return 0, 0, false, false
		}
		isRecvErr := h.Level == unix.IPPROTO_IP && h.Type == unix.IP_RECVERR ||
			h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_RECVERR
		if isRecvErr && n >= unix.CmsgLen(sizeofSockExtendedErr) {
			ee := (*unix.SockExtendedErr)(unsafe.Pointer(&ctrl[unix.CmsgLen(0)]))
			if ee.Errno == 0 && ee.Origin == unix.SO_EE_ORIGIN_ZEROCOPY {
				return ee.Info, ee.Data, ee.Code&unix.SO_EE_CODE_ZEROCOPY_COPIED != 0, true
			}
		}
		next := unix.CmsgSpace(n - unix.CmsgLen(0))
		if next >= len(ctrl) {
			break
		}
		ctrl = ctrl[next:]
	}
	return 0, 0, false, false
}

// recvErrCmsg builds the control message of a zerocopy notification.
func recvErrCmsg(level, typ int32, ee unix.SockExtendedErr) []byte {
	b := make([]byte, unix.CmsgSpace(sizeofSockExtendedErr+unix.SizeofSockaddrInet4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(sizeofSockExtendedErr + unix.SizeofSockaddrInet4))
	*(*unix.SockExtendedErr)(unsafe.Pointer(&b[unix.CmsgLen(0)])) = ee
	return b
}

func TestZerocopyCompletion(t *testing.T) {
	zc := func(lo, hi uint32, code uint8) unix.SockExtendedErr {
		return unix.SockExtendedErr{Origin: unix.SO_EE_ORIGIN_ZEROCOPY, Code: code, Info: lo, Data: hi}
	}
	other := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&other[0]))
	h.Level, h.Type = unix.SOL_SOCKET, unix.SO_RXQ_OVFL
	h.SetLen(unix.CmsgLen(4))

	tests := []struct {
		name           string
		ctrl           []byte
		lo, hi         uint32
		copied, wantOK bool
	}{
		{"zerocopied", recvErrCmsg(unix.IPPROTO_IP, unix.IP_RECVERR, zc(3, 7, 0)), 3, 7, false, true},
		{"copied", recvErrCmsg(unix.IPPROTO_IP, unix.IP_RECVERR, zc(0, 0, unix.SO_EE_CODE_ZEROCOPY_COPIED)), 0, 0, true, true},
		{"ipv6", recvErrCmsg(unix.IPPROTO_IPV6, unix.IPV6_RECVERR, zc(1, 2, 0)), 1, 2, false, true},
		{"wraps", recvErrCmsg(unix.IPPROTO_IP, unix.IP_RECVERR, zc(1<<32-2, 1, 0)), 1<<32 - 2, 1, false, true},
		{"after another cmsg", append(other, recvErrCmsg(unix.IPPROTO_IP, unix.IP_RECVERR, zc(5, 5, 0))...), 5, 5, false, true},
		{"ICMP error", recvErrCmsg(unix.IPPROTO_IP, unix.IP_RECVERR, unix.SockExtendedErr{
			Errno: uint32(unix.ECONNREFUSED), Origin: unix.SO_EE_ORIGIN_ICMP, Type: 3, Code: 3}), 0, 0, false, false},
		{"other cmsg", other, 0, 0, false, false},
		{"truncated", recvErrCmsg(unix.IPPROTO_IP, unix.IP_RECVERR, zc(1, 1, 0))[:unix.CmsgLen(4)], 0, 0, false, false},
		{"empty", nil, 0, 0, false, false},
	}
	for _, tt := range tests {
		lo, hi, copied, ok := zerocopyCompletion(tt.ctrl)
		if ok != tt.wantOK || lo != tt.lo || hi != tt.hi || copied != tt.copied {
			t.Errorf("%s: got lo %d hi %d copied %v ok %v, want %d %d %v %v",
				tt.name, lo, hi, copied, ok, tt.lo, tt.hi, tt.copied, tt.wantOK)
		}
	}
}

func TestZerocopyCompletionAllocs(t *testing.T) {
	ctrl := recvErrCmsg(unix.IPPROTO_IP, unix.IP_RECVERR,
		unix.SockExtendedErr{Origin: unix.SO_EE_ORIGIN_ZEROCOPY, Info: 1, Data: 9})
	if n := testing.AllocsPerRun(100, func() { zerocopyCompletion(ctrl) }); n != 0 {
		t.Errorf("zerocopyCompletion: %v allocations, want 0", n)
	}
}

// zcSocket opens a blocking UDP socket bound to laddr in the calling
// thread's network namespace.
func zcSocket(laddr netip.AddrPort) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if _, err := setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, DefaultBuffer); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("send buffer: %w", err)
	}
	sa := &unix.SockaddrInet4{Addr: laddr.Addr().As4(), Port: int(laddr.Port())}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind %v: %w", laddr, err)
	}
	return fd, nil
}

// zcLoopbackSender opens a sender on 127.0.0.1 with a ring of one message,
// skipping the test where the kernel lacks UDP GSO or MSG_ZEROCOPY.
func zcLoopbackSender(t *testing.T, dst netip.AddrPort, layout zcLayout) *zcSender {
	t.Helper()
	fd, err := zcSocket(loopback)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if _, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT); err != nil {
		t.Skipf("kernel lacks UDP_SEGMENT: %v", err)
	}
	s, err := newZCSender(fd, dst, layout, 1, true)
	if errors.Is(err, unix.ENOPROTOOPT) || errors.Is(err, unix.EOPNOTSUPP) {
		t.Skipf("kernel lacks MSG_ZEROCOPY for UDP (Linux 5.0): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestZerocopyLoopback sends GSO messages with MSG_ZEROCOPY to a socket on
// 127.0.0.1: every datagram arrives intact, every send is notified, and
// the kernel reports it copied them, as it must for a local receiver.
func TestZerocopyLoopback(t *testing.T) {
	rx, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(loopback))
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	// Room for a whole message's datagrams, each charged a page or so.
	if err := rx.SetReadBuffer(1 << 20); err != nil {
		t.Fatal(err)
	}
	s := zcLoopbackSender(t, rx.LocalAddr().(*net.UDPAddr).AddrPort(), zcLayoutNamed("contiguous"))

	// A lost datagram must fail the test, not hang it.
	if err := rx.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	const messages = 3
	buf := make([]byte, 2*zcSegSize)
	for range messages {
		if err := s.send(); err != nil {
			t.Fatal(err)
		}
		for i := range zcSegs {
			n, err := rx.Read(buf)
			if err != nil {
				t.Fatalf("datagram %d: %v", i, err)
			}
			want := unsafe.Slice(s.ring[0].iovs[i].Base, s.ring[0].iovs[i].Len)
			if !bytes.Equal(buf[:n], want) {
				t.Fatalf("datagram %d: got %d bytes %x..., want %d bytes %x...", i, n, head(buf[:n]), len(want), head(want))
			}
		}
	}
	if err := s.drain(); err != nil {
		t.Fatal(err)
	}
	if s.sends != messages || s.done != messages {
		t.Errorf("%d sends, %d notified, want %d", s.sends, s.done, messages)
	}
	if s.copied != s.done {
		t.Errorf("%d of %d sends to a local socket notified as copied, want all", s.copied, s.done)
	}
}

// TestZerocopyScatteredLimit records what the kernel does with the
// forwarder's own layout: 44 segments in separate buffers need more frags
// than an skb has (MAX_SKB_FRAGS, 17 unless the kernel was built with
// more), and __zerocopy_sg_from_iter then fails the whole send with
// EMSGSIZE rather than copy. The test accepts either outcome and logs it.
func TestZerocopyScatteredLimit(t *testing.T) {
	rx, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(loopback))
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	if err := rx.SetReadBuffer(1 << 20); err != nil {
		t.Fatal(err)
	}
	s := zcLoopbackSender(t, rx.LocalAddr().(*net.UDPAddr).AddrPort(), zcLayoutNamed("scattered"))
	err = s.send()
	switch {
	case errors.Is(err, unix.EMSGSIZE):
		t.Logf("MSG_ZEROCOPY refuses %d scattered segments: %v (max_skb_frags %s)", zcSegs, err, maxSKBFrags())
	case err == nil:
		t.Logf("MSG_ZEROCOPY took %d scattered segments (max_skb_frags %s)", zcSegs, maxSKBFrags())
		if err := s.drain(); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("send: got %v, want success or EMSGSIZE", err)
	}
}

// maxSKBFrags reads the kernel's MAX_SKB_FRAGS, as the sysctl's default.
func maxSKBFrags() string {
	b, err := os.ReadFile("/proc/sys/net/core/max_skb_frags")
	if err != nil {
		return "unknown"
	}
	return string(bytes.TrimSpace(b))
}
