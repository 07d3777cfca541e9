package traffic

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/overlayd/overlayd/perf/netns"
	"github.com/overlayd/overlayd/subnet/backoff"
)

// echoID numbers echo requests so that concurrent Pings, which all see every
// ICMP message of their namespace, pick out their own answers.
var echoID = func() *atomic.Uint32 {
	var n atomic.Uint32
	n.Store(rand.Uint32())
	return &n
}()

// Ping sends one ICMP echo request from inside ns to dst, size bytes long
// counting the 20-byte IPv4 header and the 8-byte ICMP header, and waits up
// to timeout (until ctx is done if timeout is not positive) for what comes
// back; see [PingResult]. With df the packet carries Don't Fragment and the
// local kernel refuses to fragment it (IP_PMTUDISC_DO); without, it may be
// fragmented anywhere. Silence is not an error: it returns a zero PingResult.
//
// The request goes out of a raw ICMP socket opened inside ns. The answer is
// recognised by id and sequence number, for ICMP errors in the quoted
// original header, so concurrent Pings in one namespace do not mix.
func Ping(ctx context.Context, ns *netns.NS, dst netip.Addr, size int, df bool, timeout time.Duration) (PingResult, error) {
	dst = dst.Unmap()
	switch {
	case ns == nil:
		return PingResult{}, errors.New("ping: no namespace")
	case !dst.Is4():
		return PingResult{}, fmt.Errorf("ping %s: only IPv4 is supported", dst)
	case size < MinPingSize || size > MaxPingSize:
		return PingResult{}, fmt.Errorf("ping %s: size %d out of range [%d, %d]", dst, size, MinPingSize, MaxPingSize)
	}

	var conn *net.IPConn
	if err := ns.Do(func() error {
		var err error
		conn, err = net.ListenIP("ip4:icmp", nil)
		return err
	}); err != nil {
		return PingResult{}, fmt.Errorf("ping %s: open raw ICMP socket in %s: %w", dst, ns.Name, err)
	}
	defer conn.Close()
	rc, err := conn.SyscallConn()
	if err != nil {
		return PingResult{}, fmt.Errorf("ping %s: %w", dst, err)
	}
	if err := configure(rc, df); err != nil {
		return PingResult{}, fmt.Errorf("ping %s: %w", dst, err)
	}

	echo := make([]byte, size-ipv4HeaderLen)
	n := echoID.Add(1)
	buildEcho(echo, uint16(n), uint16(n>>16))

	if timeout > 0 {
		if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return PingResult{}, fmt.Errorf("ping %s: %w", dst, err)
		}
	}
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	start := time.Now()
	if _, err := conn.WriteToIP(echo, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		if errors.Is(err, unix.EMSGSIZE) {
			return PingResult{LocalTooBig: true, LocalMTU: routeMTU(rc, dst)}, nil
		}
		return PingResult{}, fmt.Errorf("ping %s from %s: %w", dst, ns.Name, err)
	}

	buf := make([]byte, MaxPingSize)
	for {
		n, addr, err := conn.ReadFromIP(buf)
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return PingResult{}, fmt.Errorf("ping %s: %w", dst, ctxErr)
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return PingResult{}, nil
			}
			return PingResult{}, fmt.Errorf("ping %s: read: %w", dst, err)
		}
		from, _ := netip.AddrFromSlice(addr.IP)
		r, ok, err := match(buf[:n], from.Unmap(), echo, dst)
		if err != nil {
			return PingResult{}, fmt.Errorf("ping %s: %w", dst, err)
		}
		if ok {
			r.RTT = time.Since(start)
			return r, nil
		}
	}
}

// configure sets the Don't Fragment policy and keeps everything but echo
// replies and errors off the socket, which otherwise sees all ICMP of its
// namespace (including echo requests to local addresses).
func configure(rc syscall.RawConn, df bool) error {
	pmtu := unix.IP_PMTUDISC_DONT
	if df {
		pmtu = unix.IP_PMTUDISC_DO
	}
	// ICMP_FILTER is a mask of the types to drop.
	const keep = 1<<icmpEchoReply | 1<<icmpDestUnreach | 1<<icmpTimeExceeded | 1<<icmpParamProblem
	var sockErr error
	err := rc.Control(func(fd uintptr) {
		if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, pmtu); err != nil {
			sockErr = fmt.Errorf("set IP_MTU_DISCOVER: %w", err)
			return
		}
		if err := unix.SetsockoptInt(int(fd), unix.SOL_RAW, unix.ICMP_FILTER, int(^uint32(keep))); err != nil {
			sockErr = fmt.Errorf("set ICMP_FILTER: %w", err)
		}
	})
	return errors.Join(err, sockErr)
}

// PingRTT sends count echo requests of size bytes (as for [Ping]) from
// inside ns to dst, one at a time, interval apart, each waiting up to
// timeout for its reply, and summarises the round trips. An echo that gets
// no reply in time, or an ICMP error, counts as lost, not as an error.
//
// Unlike Ping it keeps one blocking raw socket for the whole series and
// waits in the kernel with raw system calls, so the round trips are the
// path's, as ping(8) reports them, without the Go netpoller's wake-up or a
// hunt for a P when the reply comes (see RRProcs: the caller's process
// needs a P for the waiting thread).
func PingRTT(ctx context.Context, ns *netns.NS, dst netip.Addr, size, count int, interval, timeout time.Duration) (PingStats, error) {
	dst = dst.Unmap()
	switch {
	case ns == nil:
		return PingStats{}, errors.New("ping: no namespace")
	case !dst.Is4():
		return PingStats{}, fmt.Errorf("ping %s: only IPv4 is supported", dst)
	case size < MinPingSize+8 || size > MaxPingSize:
		return PingStats{}, fmt.Errorf("ping %s: size %d out of range [%d, %d]", dst, size, MinPingSize+8, MaxPingSize)
	case count < 1 || interval < 0 || timeout <= 0:
		return PingStats{}, fmt.Errorf("ping %s: want count ≥ 1, interval ≥ 0 and timeout > 0", dst)
	}
	var st PingStats
	err := ns.Do(func() error {
		fd, err := blockingRawICMP(dst, timeout)
		if err != nil {
			return fmt.Errorf("ping %s from %s: %w", dst, ns.Name, err)
		}
		defer unix.Close(fd)
		echo := make([]byte, size-ipv4HeaderLen)
		buf := make([]byte, MaxPingSize)
		h := new(Histogram)
		id := uint16(echoID.Add(1))
		for seq := range count {
			if seq > 0 {
				if err := backoff.Sleep(ctx, interval); err != nil {
					return fmt.Errorf("ping %s: %w", dst, err)
				}
			}
			buildEcho(echo, id, uint16(seq))
			start := time.Now()
			if err := writeFull(fd, echo); err != nil {
				return fmt.Errorf("ping %s from %s: %w", dst, ns.Name, err)
			}
			st.Sent++
			reply, err := awaitEcho(fd, buf, echo, dst, start, timeout)
			if err != nil {
				return fmt.Errorf("ping %s: %w", dst, err)
			}
			if reply {
				h.Record(time.Since(start))
			}
		}
		st.Received = int64(h.Count())
		st.RTT = h.Stats()
		return nil
	})
	return st, err
}

// blockingRawICMP opens a blocking raw ICMP socket connected to dst, so that
// it only sees what dst sends, whose receives give up after timeout.
func blockingRawICMP(dst netip.Addr, timeout time.Duration) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	if err != nil {
		return -1, fmt.Errorf("open raw ICMP socket: %w", err)
	}
	const keep = 1<<icmpEchoReply | 1<<icmpDestUnreach | 1<<icmpTimeExceeded | 1<<icmpParamProblem
	for _, err := range []error{
		setRecvTimeout(fd, timeout),
		unix.SetsockoptInt(fd, unix.SOL_RAW, unix.ICMP_FILTER, int(^uint32(keep))),
		unix.Connect(fd, &unix.SockaddrInet4{Addr: dst.As4()}),
	} {
		if err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	return fd, nil
}

// awaitEcho reads fd, whose receive timeout is timeout, until the reply to
// echo sent at start arrives (true), or an ICMP error about it or the
// timeout (false). Anything else is skipped.
//
// The read is a raw system call, so the goroutine keeps its P while it
// waits (see RRProcs), and sysmon, which takes a P held 10 ms without a
// pass through the scheduler for a hog, interrupts the wait with a signal
// every 10 ms or so. Each read would restart the socket's receive timeout:
// a lost echo would wait forever. So an interrupted read passes through
// the scheduler and waits again only for what is left of the deadline.
func awaitEcho(fd int, buf, echo []byte, dst netip.Addr, start time.Time, timeout time.Duration) (reply bool, err error) {
	shortened := false
	defer func() {
		if shortened { // give the next echo the whole timeout
			err = errors.Join(err, setRecvTimeout(fd, timeout))
		}
	}()
	for {
		n, err := rawRead(fd, buf)
		switch {
		case err == unix.EINTR:
			left := timeout - time.Since(start)
			if left <= 0 {
				return false, nil
			}
			runtime.Gosched()
			shortened = true
			if err := setRecvTimeout(fd, left); err != nil {
				return false, err
			}
			continue
		case err == unix.EAGAIN:
			return false, nil
		case err != nil:
			return false, fmt.Errorf("read: %w", err)
		case n < ipv4HeaderLen:
			continue
		}
		ihl := int(buf[0]&0x0f) * 4
		if ihl < ipv4HeaderLen || ihl > n {
			continue
		}
		r, ok, err := match(buf[ihl:n], dst, echo, dst)
		if err != nil {
			return false, err
		}
		if ok {
			return r.Reply, nil
		}
	}
}

func setRecvTimeout(fd int, d time.Duration) error {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("set SO_RCVTIMEO: %w", err)
	}
	return nil
}

// routeMTU is the MTU the kernel holds for the route to dst, learnt path MTU
// included, or 0 if it will not say. IP_MTU needs a connected socket, so it
// connects the socket, which is about to be closed anyway.
func routeMTU(rc syscall.RawConn, dst netip.Addr) int {
	mtu := 0
	rc.Control(func(fd uintptr) {
		if unix.Connect(int(fd), &unix.SockaddrInet4{Addr: dst.As4()}) != nil {
			return
		}
		if v, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU); err == nil {
			mtu = v
		}
	})
	return mtu
}
