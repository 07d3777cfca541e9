package udp

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

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
