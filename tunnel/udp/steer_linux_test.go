package udp

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/overlayd/overlayd/perf/netns/netnstest"
)

// A group of n sockets steered by attachSteering hands every datagram from
// a port bound by bindSourcePort(i, n) to its socket i.
func TestSteeringBySourcePort(t *testing.T) {
	ns := netnstest.New(t, "udp-steer")
	const n = 3
	addr := netip.MustParseAddr("198.18.0.1")
	var group, senders []int
	t.Cleanup(func() {
		for _, fd := range append(group, senders...) {
			unix.Close(fd)
		}
	})
	ctx := context.Background()
	if err := ns.IP(ctx, "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	if err := ns.IP(ctx, "addr", "add", addr.String()+"/32", "dev", "lo"); err != nil {
		t.Fatal(err)
	}
	err := ns.Do(func() error {
		for i := range n {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK, 0)
			if err != nil {
				return err
			}
			group = append(group, fd)
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
				return err
			}
			if err := unix.Bind(fd, &unix.SockaddrInet4{Port: 8285, Addr: addr.As4()}); err != nil {
				return err
			}
			if i == 0 {
				if err := attachSteering(fd, n); err != nil {
					return err
				}
			}
		}
		for i := range n {
			fd, port, err := bindSourcePort(addr, i, n)
			if err != nil {
				return err
			}
			senders = append(senders, fd)
			if port%n != i {
				return fmt.Errorf("sender %d bound to port %d", i, port)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	to := &unix.SockaddrInet4{Port: 8285, Addr: addr.As4()}
	for round := range 4 {
		for i, fd := range senders {
			if err := unix.Sendto(fd, []byte{byte(i), byte(round)}, 0, to); err != nil {
				t.Fatal(err)
			}
		}
	}
	buf := make([]byte, 16)
	for i, fd := range group {
		for range 4 {
			m, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				t.Fatalf("socket %d: %v", i, err)
			}
			if m != 2 || int(buf[0]) != i {
				t.Fatalf("socket %d got a datagram of sender %d", i, buf[0])
			}
		}
		if _, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT); err != unix.EAGAIN {
			t.Fatalf("socket %d: more than its sender's datagrams (%v)", i, err)
		}
	}
}

// Listen with Queues wires the steering: Conn i of a group sends from a
// port of its own, p mod n == i, and what it sends reaches Conn i of the
// peer's group, whatever the kernel's reuseport hash would have chosen.
// With one queue a Conn sends from its receiving socket, as flanneld does.
func TestListenQueues(t *testing.T) {
	ns := netnstest.New(t, "udp-queues")
	const n = 2
	a := netip.MustParseAddrPort("198.18.0.1:8285")
	b := netip.MustParseAddrPort("198.18.0.2:8285")
	ctx := context.Background()
	if err := ns.IP(ctx, "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	for _, ap := range []netip.AddrPort{a, b} {
		if err := ns.IP(ctx, "addr", "add", ap.Addr().String()+"/32", "dev", "lo"); err != nil {
			t.Fatal(err)
		}
	}
	var as, bs []*stdConn
	var single *stdConn
	err := ns.Do(func() error {
		for i := range n {
			for _, g := range []struct {
				addr  netip.AddrPort
				conns *[]*stdConn
			}{{a, &as}, {b, &bs}} {
				c, err := Listen(g.addr, Options{ReusePort: true, Queue: i, Queues: n, RecvBuffer: -1, SendBuffer: -1})
				if err != nil {
					return err
				}
				t.Cleanup(func() { c.Close() })
				*g.conns = append(*g.conns, c.(*stdConn))
			}
		}
		c, err := Listen(netip.MustParseAddrPort("198.18.0.1:8286"), Options{Queues: 1})
		if err != nil {
			return err
		}
		t.Cleanup(func() { c.Close() })
		single = c.(*stdConn)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if single.SendAddr() != single.LocalAddr() {
		t.Errorf("one queue: sends from %v, receives on %v; want the same socket", single.SendAddr(), single.LocalAddr())
	}
	const rounds = 4
	for i, c := range bs {
		if c.LocalAddr() != b {
			t.Errorf("conn %d receives on %v, want %v", i, c.LocalAddr(), b)
		}
		if sa := c.SendAddr(); sa.Addr() != b.Addr() || int(sa.Port())%n != i {
			t.Errorf("conn %d sends from %v, want %v and a port p with p mod %d == %d", i, sa, b.Addr(), n, i)
		}
		for round := range rounds {
			if _, err := c.WriteBatch([][]byte{{byte(i), byte(round)}}, []netip.AddrPort{a}); err != nil {
				t.Fatal(err)
			}
		}
	}
	bt := newBatch(2*rounds*n, 64)
	// A datagram steered wrong must fail the test, not hang it.
	watchdog := time.AfterFunc(time.Minute, func() {
		for _, c := range as {
			c.Close()
		}
	})
	defer watchdog.Stop()
	for i, c := range as {
		for got := 0; got < rounds; {
			m, err := c.ReadBatch(bt.bufs, bt.sizes, bt.srcs)
			if err != nil {
				t.Fatal(err)
			}
			for k := range m {
				if bt.sizes[k] != 2 || int(bt.bufs[k][0]) != i || bt.srcs[k] != bs[i].SendAddr() {
					t.Fatalf("conn %d got a datagram %x from %v, want one of conn %d's, from %v", i, bt.bufs[k][:bt.sizes[k]], bt.srcs[k], i, bs[i].SendAddr())
				}
			}
			got += m
		}
		if m, _, err := unix.Recvfrom(c.fd, make([]byte, 16), unix.MSG_DONTWAIT); err != unix.EAGAIN {
			t.Fatalf("conn %d: more than its peer's datagrams (%d bytes, %v)", i, m, err)
		}
	}
}

func TestListenQueuesInvalid(t *testing.T) {
	for _, opts := range []Options{
		{Queue: 0, Queues: 2},                  // a group needs ReusePort
		{ReusePort: true, Queue: 2, Queues: 2}, // out of range
		{ReusePort: true, Queue: -1, Queues: 2},
	} {
		if c, err := Listen(loopback, opts); err == nil {
			c.Close()
			t.Errorf("Listen with %+v succeeded", opts)
		}
	}
}
