package afpacket

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Options configures Listen. The zero value is a good start.
type Options struct {
	// BatchSize is the number of datagrams per sendmmsg, and the most
	// ReadBatch returns, 1 to 1024; 0 means DefaultBatchSize.
	BatchSize int

	// Group ties the Conns of one overlayd together: they share one
	// PACKET_FANOUT group (the kernel spreads flows across them by
	// hash), one neighbour cache and one Guard. nil opens a Conn of its
	// own, which receives every datagram of laddr.
	Group *Group

	// Ring is the kind of receive ring: RingV2 (the zero value) or
	// RingV3.
	Ring Ring

	// The receive ring: Blocks blocks of BlockSize bytes. In a RingV3, a
	// block is handed over when it is full or BlockTimeout after its
	// first frame, so BlockTimeout bounds the latency a quiet link adds
	// (the kernel counts it in whole milliseconds); a RingV2 hands over
	// every frame at once and ignores it. 0 picks DefaultBlockSize,
	// DefaultBlocks and DefaultBlockTimeout. BlockSize must be a multiple
	// of the page size and hold a 64 KiB frame.
	BlockSize    int
	Blocks       int
	BlockTimeout time.Duration

	// SendBuffer is the socket's send buffer in bytes (SO_SNDBUFFORCE,
	// else SO_SNDBUF); 0 means 4 MiB.
	SendBuffer int

	// GSO lets WriteBatch send each run of datagrams of equal size to one
	// destination as one UDP GSO super-datagram (a virtio_net_hdr with
	// VIRTIO_NET_HDR_GSO_UDP_L4), which the kernel or the NIC segments
	// where the frame leaves the machine, and which crosses a veth whole.
	// Kernels before 6.2 refuse it; the first refusal turns it off,
	// WriteBatch returns an *underlay.GSODisabledError, once, and
	// Effective and Stats report it.
	GSO bool

	// Guard is how the kernel is kept from answering the datagrams the
	// ring takes; GuardAuto picks one.
	Guard Guard

	// BusyPoll is the most a ReadBatch that finds the ring empty watches
	// it, yielding the CPU between looks, before it sleeps (package
	// busypoll); the window adapts to the traffic. A look reads the
	// ring's next frame status, with no system call, so it sees a frame
	// of a RingV2 at once and one of a RingV3 only once its block is
	// handed over. 0 sleeps at once.
	BusyPoll time.Duration
}

// Defaults for Options.
const (
	DefaultBatchSize    = 64
	DefaultBlockSize    = 256 << 10
	DefaultBlocks       = 16
	DefaultBlockTimeout = time.Millisecond
	defaultSendBuffer   = 4 << 20
	maxBatchSize        = 1024 // UIO_MAXIOV
	minBlockSize        = 128 << 10
)

func (o Options) withDefaults() (Options, error) {
	if o.BatchSize == 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.Blocks == 0 {
		o.Blocks = DefaultBlocks
	}
	if o.BlockTimeout == 0 {
		o.BlockTimeout = DefaultBlockTimeout
	}
	if o.SendBuffer == 0 {
		o.SendBuffer = defaultSendBuffer
	}
	var errs []error
	if o.BatchSize < 1 || o.BatchSize > maxBatchSize {
		errs = append(errs, fmt.Errorf("batch size %d out of range 1..%d", o.BatchSize, maxBatchSize))
	}
	if o.BlockSize < minBlockSize || o.BlockSize&(o.BlockSize-1) != 0 {
		errs = append(errs, fmt.Errorf("block size %d: want a power of two of at least %d", o.BlockSize, minBlockSize))
	}
	if o.Blocks < 2 || o.Blocks > 1024 {
		errs = append(errs, fmt.Errorf("%d blocks: want 2 to 1024", o.Blocks))
	}
	if o.BlockTimeout < time.Millisecond {
		errs = append(errs, fmt.Errorf("block timeout %v: the kernel counts whole milliseconds", o.BlockTimeout))
	}
	if o.Ring < RingV2 || o.Ring > RingV3 {
		errs = append(errs, fmt.Errorf("ring %d: unknown", o.Ring))
	}
	if o.Guard < GuardAuto || o.Guard > GuardSocket {
		errs = append(errs, fmt.Errorf("guard %d: unknown", o.Guard))
	}
	return o, errors.Join(errs...)
}

// Ring is the kind of a Conn's receive ring (PACKET_RX_RING).
type Ring int

const (
	// RingV2 is a TPACKET_V2 ring: a slot per frame, each handed over
	// as soon as the kernel has copied a datagram into it, and the
	// reader woken per datagram, so a lone datagram waits for nothing.
	// Datagrams larger than a slot (sized for the interface's MTU), UDP
	// GSO super-datagrams for one, are queued whole on the socket
	// instead (PACKET_COPY_THRESH) and read from there.
	RingV2 Ring = iota
	// RingV3 is a TPACKET_V3 ring: frames packed into blocks, a block
	// handed over when it is full or after BlockTimeout. A datagram on a
	// quiet link waits for the timer: at least a millisecond per hop.
	RingV3
)

func (r Ring) String() string {
	switch r {
	case RingV2:
		return "v2"
	case RingV3:
		return "v3"
	}
	return fmt.Sprintf("Ring(%d)", int(r))
}

// Guard is how a Conn keeps the kernel's own stack from handling the
// datagrams it takes from the ring. Nothing listens on laddr's port, so
// the kernel would answer each with an ICMP port unreachable.
//
// A tc filter drops them right after AF_PACKET has copied them, before
// IP: each costs the kernel one small BPF program. A bound UDP socket
// costs it what any received datagram costs (IP header checks, route and
// socket lookups), and a drop there; it also reserves the port. A tc filter
// outlives a crashed process, though: Listen replaces a leftover filter for
// the same address, and RemoveStaleGuard removes one.
type Guard int

const (
	// GuardAuto uses GuardTC where the kernel has clsact and cls_bpf,
	// else GuardSocket.
	GuardAuto Guard = iota
	// GuardTC installs a classic BPF filter on the interface's tc
	// ingress hook (a clsact qdisc, added if missing) that drops IPv4 UDP
	// to laddr, first fragments included.
	GuardTC
	// GuardSocket binds a UDP socket to laddr whose socket filter
	// drops everything.
	GuardSocket
)

func (g Guard) String() string {
	switch g {
	case GuardAuto:
		return "auto"
	case GuardTC:
		return "tc"
	case GuardSocket:
		return "socket"
	}
	return fmt.Sprintf("Guard(%d)", int(g))
}

// Configured is implemented by the Conns that Listen returns.
type Configured interface {
	// Effective reports the Options in use, GuardAuto resolved.
	Effective() Options
	// Stats reports what the Conn has counted since it was opened.
	Stats() Stats
}

// Stats are a Conn's counters. Frames dropped here never reach ReadBatch;
// a UDP socket would have had the kernel drop them.
type Stats struct {
	Received uint64 // datagrams returned by ReadBatch
	Sent     uint64 // datagrams the driver took

	Malformed   uint64 // bad Ethernet, IPv4 or UDP header or length
	BadChecksum uint64 // IPv4 header or UDP checksum wrong
	Truncated   uint64 // frames larger than the ring (or a RingV2's socket queue) could hold
	Copied      uint64 // frames larger than a RingV2 slot, read whole from the socket
	RingDrops   uint64 // frames the kernel dropped with the ring full
	Corrupt     uint64 // ring blocks whose frames did not add up

	NoNeighbour uint64 // datagrams not sent: the next hop's MAC is unknown
	Unroutable  uint64 // datagrams not sent: no route out of the interface

	GSODisabled bool // WriteBatch turned GSO off: the kernel refused it
}

// Errors of WriteBatch, in an *underlay.WriteError. Neither is terminal.
var (
	// ErrNoNeighbour: the next hop's MAC address is not known yet. The
	// kernel has been asked to resolve it; later batches get through.
	ErrNoNeighbour = errors.New("afpacket: next hop's MAC address not resolved yet")
	// ErrUnroutable: the kernel routes the destination out of another
	// interface, or nowhere.
	ErrUnroutable = errors.New("afpacket: no route to the destination out of the interface")
)

// ErrNotSupported is returned by Listen on interfaces it cannot drive
// (not Ethernet) and off Linux.
var ErrNotSupported = errors.New("afpacket: not supported")

// Group is shared by the Conns of one overlayd; see Options.Group. The zero
// value is ready to use. Its Conns must all be on the same interface and
// address, in the same network namespace.
type Group struct {
	mu      sync.Mutex
	members int
	shared  *shared // made by the first Listen, torn down by the last Close
}
