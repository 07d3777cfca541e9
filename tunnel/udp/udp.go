// Package udp is overlayd's default underlay: an underlay.Conn on a kernel
// UDP socket that receives and sends many datagrams per system call.
//
// On Linux it uses recvmmsg(2) and sendmmsg(2) (underlay.Sender) on a
// blocking socket outside Go's netpoller: a reader sleeps in the kernel,
// which wakes its thread directly (see doc/DESIGN-NOTES.md, "Latency"). It
// can hand the kernel runs of equal datagrams to segment (UDP GSO) and take
// coalesced ones back (UDP GRO). Buffers are owned by the caller; a Conn
// keeps no reference to them between calls.
package udp

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Options configures Listen. The zero value is a good start.
type Options struct {
	// BatchSize is the number of datagrams per recvmmsg and sendmmsg,
	// 1 to 1024; 0 means DefaultBatchSize.
	BatchSize int

	// ReusePort sets SO_REUSEPORT before binding, so that each worker can
	// have its own socket on the same address and the kernel spreads
	// flows across them.
	ReusePort bool

	// Queue and Queues spread flows over the cores as the kernel's VXLAN
	// does (steer_linux.go): with Queues > 1, Listen opens Conn Queue of a
	// ReusePort group of Queues Conns, opened in order 0, 1, ... Such a
	// Conn sends from a socket of its own, bound to a port p of the local
	// port range with p mod Queues == Queue, and Conn 0 makes the group
	// deliver what a peer sends from port p to Conn p mod Queues: a worker
	// serving TUN queue i sends from its own port, and its flows arrive at
	// the peer's worker i. With Queues <= 1 a Conn sends from its
	// receiving socket, as flanneld does; flanneld ignores the source port
	// either way.
	Queue, Queues int

	// RecvBuffer and SendBuffer are the socket buffer sizes in bytes.
	// SO_RCVBUFFORCE and SO_SNDBUFFORCE are tried first (they need
	// CAP_NET_ADMIN), then SO_RCVBUF and SO_SNDBUF, which the kernel caps
	// at net.core.rmem_max and wmem_max. 0 means DefaultBuffer; a negative
	// size leaves the kernel's default. Effective reports what was granted.
	RecvBuffer, SendBuffer int

	// GSO lets WriteBatch send each run of datagrams of equal size to one
	// destination as one message, which the kernel segments (UDP_SEGMENT,
	// Linux 4.18). It is probed at Listen and stays off where the kernel
	// lacks it, and is turned off for good if the egress device cannot
	// segment: WriteBatch then returns an *underlay.GSODisabledError, once,
	// and Effective reports it.
	GSO bool

	// GRO lets the kernel coalesce received datagrams of one flow
	// (UDP_GRO, Linux 5.0). ReadBatch splits them again, so callers see
	// the same datagrams, copied once from the Conn's own buffers. It is
	// probed at Listen and stays off where the kernel lacks it.
	GRO bool

	// BusyPoll is the most a ReadBatch that finds the socket empty polls
	// it, yielding the CPU between polls, before it sleeps (package
	// busypoll); the window adapts to the traffic. 0 sleeps at once.
	BusyPoll time.Duration
}

// Defaults for Options.
const (
	DefaultBatchSize = 64
	DefaultBuffer    = 4 << 20
	maxBatchSize     = 1024 // UIO_MAXIOV: sendmmsg takes no more per call
)

func (o Options) withDefaults() (Options, error) {
	if o.BatchSize == 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.BatchSize < 1 || o.BatchSize > maxBatchSize {
		return o, fmt.Errorf("batch size %d out of range 1..%d", o.BatchSize, maxBatchSize)
	}
	if o.Queues > 1 {
		if !o.ReusePort {
			return o, fmt.Errorf("%d queues need ReusePort", o.Queues)
		}
		if o.Queue < 0 || o.Queue >= o.Queues {
			return o, fmt.Errorf("queue %d out of range 0..%d", o.Queue, o.Queues-1)
		}
	}
	if o.RecvBuffer == 0 {
		o.RecvBuffer = DefaultBuffer
	}
	if o.SendBuffer == 0 {
		o.SendBuffer = DefaultBuffer
	}
	return o, nil
}

// Configured is implemented by the Conns that Listen returns.
type Configured interface {
	// Unsupported reports the offloads asked for that the kernel lacks:
	// *OffloadError values joined, or nil.
	Unsupported() error

	// Effective reports the Options as the kernel granted them: buffer
	// sizes as set (the kernel's getsockopt figure halved: it doubles
	// what it was given, for bookkeeping), offloads off where unsupported.
	Effective() Options

	// SendAddr is the address datagrams leave from: LocalAddr, or with
	// Queues > 1 the Conn's own source port.
	SendAddr() netip.AddrPort
}

// ErrOffloadUnsupported matches every *OffloadError.
var ErrOffloadUnsupported = errors.New("offload not supported by the kernel")

// An OffloadError says that the kernel lacks an offload asked for in
// Options. It is informational: Listen succeeded and the Conn moves the
// same datagrams without it, with more system calls.
type OffloadError struct {
	Offload string // e.g. "UDP_SEGMENT (GSO, Linux 4.18)"
	Err     error  // what the probe got
}

func (e *OffloadError) Error() string {
	return fmt.Sprintf("udp: %s unavailable: %v", e.Offload, e.Err)
}

func (e *OffloadError) Unwrap() error        { return e.Err }
func (e *OffloadError) Is(target error) bool { return target == ErrOffloadUnsupported }
