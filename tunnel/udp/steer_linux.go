package udp

// Flow steering across a reuseport group. Every flow between two hosts
// would otherwise share one 4-tuple (peer:8285 -> us:8285), so the kernel's
// reuseport hash would put all of them on one socket and one worker. The
// kernel's own VXLAN spreads flows by giving each one its own outer source
// port (udp_flow_src_port); a UDP socket cannot pick its source port per
// datagram, so each worker sends from a port of its own instead, and the
// receiving group picks its socket from the sender's port. A worker
// serves the flows its TUN queue gets (the kernel hashes each flow to one
// queue), so a flow keeps one queue, one source port, one receiving socket
// and one worker on the other side: spread over the cores, never reordered.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// skfNetOff is SKF_NET_OFF: a classic BPF load at this offset reads from
// the network header rather than from the data pointer, which for a
// reuseport program is past the UDP header.
const skfNetOff = 0xfff00000 // -0x100000 as uint32

// steeringProgram selects socket (outer UDP source port) mod n of a
// reuseport group, assuming an IPv4 header without options, as every
// VTEP and overlayd send. A result out of range (never, here) makes the
// kernel fall back to its hash.
func steeringProgram(n int) ([]unix.SockFilter, error) {
	insns, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: skfNetOff + 20, Size: 2}, // UDP source port
		bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: uint32(n)},
		bpf.RetA{},
	})
	if err != nil {
		return nil, err
	}
	prog := make([]unix.SockFilter, len(insns))
	for i, in := range insns {
		prog[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	return prog, nil
}

// attachSteering makes the reuseport group of fd, n sockets bound in
// order, pick the socket of each datagram by its source port.
func attachSteering(fd, n int) error {
	prog, err := steeringProgram(n)
	if err != nil {
		return err
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog); err != nil {
		return fmt.Errorf("SO_ATTACH_REUSEPORT_CBPF: %w", err)
	}
	return nil
}

// bindSourcePort opens a UDP socket for sending, bound to addr and to a
// port p of the local port range with p mod n == i, so that a receiving
// group of n sockets steered by attachSteering hands what it sends to
// socket i. Ports in use are skipped. The socket is blocking, as a
// Conn's are.
func bindSourcePort(addr netip.Addr, i, n int) (fd int, port int, err error) {
	lo, hi := localPortRange()
	for p := lo + (i-lo%n+n)%n; p <= hi; p += n {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, 0, err
		}
		err = unix.Bind(fd, &unix.SockaddrInet4{Port: p, Addr: addr.As4()})
		if err == nil {
			return fd, p, nil
		}
		unix.Close(fd)
		if !errors.Is(err, unix.EADDRINUSE) {
			return -1, 0, fmt.Errorf("bind %v:%d: %w", addr, p, err)
		}
	}
	return -1, 0, fmt.Errorf("bind %v: no free port p with p mod %d == %d in %d..%d", addr, n, i, lo, hi)
}

// localPortRange is net.ipv4.ip_local_port_range, or Linux's default.
func localPortRange() (lo, hi int) {
	lo, hi = 32768, 60999
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	var l, h int
	if n, _ := fmt.Sscan(string(b), &l, &h); n == 2 && 0 < l && l <= h && h <= 65535 {
		return l, h
	}
	return lo, hi
}
