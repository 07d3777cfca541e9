// Package underlay is the contract between overlayd's engine and the
// sockets that carry its datagrams between hosts: the Conn interface, its
// errors and counters, and what its two implementations share. Those are
// tunnel/udp (a kernel UDP socket) and tunnel/afpacket (an AF_PACKET
// socket with a ring); both send with this package's sendmmsg driver
// (Sender) and cut UDP GSO runs with SegmentRun. Buffers are owned by the
// caller; a Conn keeps no reference to them between calls.
package underlay

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// Conn is an underlay socket read and written in batches of UDP
// datagrams.
//
// ReadBatch and WriteBatch may run at the same time. Calls of the same kind
// are serialized, as each kind has one set of system-call arrays per Conn:
// serve a Conn with one reader and one writer goroutine, and open more Conns
// for more parallelism.
type Conn interface {
	// ReadBatch receives up to len(bufs) datagrams, datagram i into
	// bufs[i], its length into sizes[i] and its sender into srcs[i]. It
	// blocks until at least one datagram is available, then returns what
	// it can get without blocking again. len(sizes) and len(srcs) must be
	// >= len(bufs). A datagram longer than its buffer is truncated to it,
	// as by recvfrom(2). net.ErrClosed is terminal; other errors are not.
	ReadBatch(bufs [][]byte, sizes []int, srcs []netip.AddrPort) (n int, err error)

	// WriteBatch sends bufs[i] to dsts[i] for every i, len(dsts) >=
	// len(bufs), and returns how many datagrams the kernel accepted. It
	// blocks while the socket's send buffer is full. A datagram the kernel
	// refuses (no route, too large, not an IPv4 destination) does not stop
	// the batch: the error is then a *WriteError, which is not terminal.
	// Nor is a *GSODisabledError, returned once if the call turned GSO
	// off. net.ErrClosed is terminal.
	WriteBatch(bufs [][]byte, dsts []netip.AddrPort) (n int, err error)

	// BatchSize is the number of datagrams per system call; larger batches
	// are moved in several. It does not change over the lifetime of a Conn.
	BatchSize() int

	// LocalAddr is the address the socket is bound to.
	LocalAddr() netip.AddrPort

	// Close closes the socket and unblocks pending calls. Later calls
	// return net.ErrClosed.
	Close() error
}

// A WriteError reports the datagrams of one WriteBatch that the kernel
// refused. It is not terminal: the batch's other datagrams were sent and
// the Conn remains usable.
type WriteError struct {
	Dropped int            // number of datagrams refused
	Addr    netip.AddrPort // destination of one of them
	Err     error          // why that one was refused
	// Refused lists the refused datagrams' indices in the batch, in
	// order, when the Conn knows them (both Linux underlays do), so that
	// the drops are charged to the right peers; nil otherwise.
	Refused []int
}

func (e *WriteError) Error() string {
	return fmt.Sprintf("underlay: write: %d datagrams refused, one to %v: %v", e.Dropped, e.Addr, e.Err)
}

func (e *WriteError) Unwrap() error { return e.Err }

// ErrGSODisabled matches every *GSODisabledError.
var ErrGSODisabled = errors.New("underlay: GSO turned off")

// A GSODisabledError says that WriteBatch turned GSO off for good: the
// kernel refused a segmented message in a way that says it never takes
// one (Errno), so the run was sent again datagram by datagram, as will be
// all later ones, with more system calls. It is returned once per Conn,
// with the call's sent count; Err is that call's *WriteError, if any. It
// is not terminal.
type GSODisabledError struct {
	Errno syscall.Errno // what the segmented message got
	Err   error         // the call's *WriteError, or nil
}

func (e *GSODisabledError) Error() string {
	s := fmt.Sprintf("underlay: GSO turned off: the kernel refused a segmented message: %v", e.Errno)
	if e.Err != nil {
		s += "; " + e.Err.Error()
	}
	return s
}

func (e *GSODisabledError) Is(target error) bool { return target == ErrGSODisabled }

func (e *GSODisabledError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Errno}
	}
	return []error{e.Errno, e.Err}
}

// Counters are a Conn's own counters by name, as `overlayd status` and
// /metrics show them: counts the engine cannot see, such as frames an
// AF_PACKET Conn dropped before ReadBatch, or GSO turned off. Names are
// snake_case and the same for every Conn of one kind.
type Counters map[string]uint64

// Common counter names.
const (
	CounterReceived    = "received"     // datagrams returned by ReadBatch
	CounterSent        = "sent"         // datagrams the kernel took
	CounterGSODisabled = "gso_disabled" // 1 once WriteBatch turned GSO off
)

// Add adds o's counts into c.
func (c Counters) Add(o Counters) {
	for k, v := range o {
		c[k] += v
	}
}

// Counting is implemented by the Conns that keep Counters.
type Counting interface {
	Counters() Counters
}
