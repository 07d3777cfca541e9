// Package tun is the host edge of overlayd's data path: a TUN interface that
// is read and written many packets per call.
//
// A Device moves whole IP packets (no packet-information header) between the
// kernel and buffers the caller owns. The caller reserves offset bytes of
// headroom in front of each packet, so the forwarder can write its
// encapsulation header in place and hand the same buffer to the underlay
// without a copy.
package tun

import "fmt"

// Device is one queue of a TUN interface.
//
// Read and Write may run at the same time. Calls of the same kind are
// serialized, so a queue is best served by one reader and one writer
// goroutine; parallelism comes from more queues.
type Device interface {
	// Read reads up to len(bufs) packets, packet i into bufs[i][offset:],
	// and its length into sizes[i]. It blocks until at least one packet is
	// available, then returns what it can get without blocking again.
	// len(sizes) must be >= len(bufs), and each bufs[i][offset:] must hold
	// a whole packet (MTU bytes). The n packets read are valid even when
	// err != nil. os.ErrClosed is terminal; any other error is not (the
	// packet concerned is lost) and the next Read may succeed.
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)

	// Write writes each bufs[i][offset:] as one packet and returns how many
	// the kernel accepted. A packet the kernel refuses (EINVAL for one that
	// is neither IPv4 nor IPv6, EIO while the interface is down) does not
	// stop the batch: the error is then a *WriteError, which is not
	// terminal. os.ErrClosed is.
	Write(bufs [][]byte, offset int) (int, error)

	// BatchSize is the number of buffers a Read or Write is designed for.
	// It does not change over the lifetime of a Device.
	BatchSize() int

	// MTU reports the interface's current MTU.
	MTU() (int, error)

	// Name reports the interface's name.
	Name() string

	// Close closes the queue and unblocks a pending Read. Later calls of
	// any method that returns an error (Close included) return
	// os.ErrClosed. The interface disappears with its last open queue,
	// unless it was created persistent by someone else.
	Close() error
}

// A WriteError reports the packets of one Write that the kernel refused. It
// is not terminal: the batch's other packets were written and the Device
// remains usable.
type WriteError struct {
	Dropped int   // number of packets refused
	Err     error // why the first of them was refused
}

func (e *WriteError) Error() string {
	return fmt.Sprintf("tun: write: %d packets refused: %v", e.Dropped, e.Err)
}

func (e *WriteError) Unwrap() error { return e.Err }
