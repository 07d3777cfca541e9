// Package tun is the host edge of overlayd's data path: a TUN interface that
// is read and written many packets per call.
//
// A Device moves whole IP packets (no packet-information header) between the
// kernel and buffers the caller owns. The caller reserves offset bytes of
// headroom in front of each packet, so the forwarder can write its
// encapsulation header in place and hand the same buffer to the underlay
// without a copy.
//
// With offloads (WithOffloads), the kernel hands the native Device TCP and
// UDP super-packets of up to 64 KiB and takes them back: Read splits them
// into MTU-sized packets with complete checksums (GSO), and Write merges
// the segments of each TCP flow, and with USO the datagrams of each UDP
// flow, before they reach the kernel (GRO). The caller still sees ordinary
// packets; only Write's headroom matters (see WithOffloads).
package tun

import (
	"errors"
	"fmt"
	"time"
)

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
	// err != nil. os.ErrClosed (after Close) and ErrDeleted are terminal;
	// any other error is not (the packet concerned is lost) and the next
	// Read may succeed.
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)

	// Write writes each bufs[i][offset:] as one packet and returns how many
	// the kernel accepted. A packet the kernel refuses (EINVAL for one that
	// is neither IPv4 nor IPv6, EIO while the interface is down) does not
	// stop the batch: the error is then a *WriteError, which is not
	// terminal. os.ErrClosed and ErrDeleted are. With offloads, Write needs headroom and
	// may rewrite headers (see WithOffloads).
	//
	// A TCP packet longer than the MTU (a super-frame that a kernel VTEP
	// sent whole; see offload.SuperPacketHdr) goes to the kernel cut into
	// packets of the MTU, so that it can be forwarded: the native Device
	// hands it over as a super-packet with offloads, and cuts it itself
	// without, overwriting it. It counts as one packet.
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
	Refused []int // their indices in the Write's bufs, ascending
	Err     error // why the first of them was refused
}

func (e *WriteError) Error() string {
	return fmt.Sprintf("tun: write: %d packets refused: %v", e.Dropped, e.Err)
}

func (e *WriteError) Unwrap() error { return e.Err }

// An Option changes how Create opens a TUN interface.
type Option func(*options)

type options struct {
	offloads bool
	verify   bool
	partial  bool
	steerCPU bool
	busyPoll time.Duration
	// fault, when set, is called before each ioctl that negotiates
	// offloads, with its request and flags; an error it returns stands in
	// for the kernel's. Tests use it to play an older kernel.
	fault func(req uint, flags uint32) error
}

// WithOffloads asks for IFF_VNET_HDR and the kernel's offloads: checksums
// and TCP segmentation (TSO), and UDP segmentation (USO) on Linux 6.2 and
// later. The kernel then hands Read super-packets of up to 64 KiB, which
// Read splits into packets no larger than the MTU, each with complete
// checksums, and Write merges consecutive segments of a TCP flow into
// super-packets, so the kernel's TCP handles one packet instead of dozens;
// with USO it merges consecutive datagrams of a UDP flow too, which the
// kernel cuts apart again only where a socket takes them.
// BatchSize becomes 128: the segments of a 64 KiB super-packet at an MSS of
// 1432 are 46.
//
// Write then needs offset >= offload.VirtioNetHdrLen (10) bytes of headroom
// in front of every packet, for the header it hands the kernel, and
// returns ErrNoHeadroom otherwise. The segments merged into a super-packet
// are not copied: Write hands the kernel the first one's headers and every
// payload from its own buffer in one writev(2). Write may rewrite the
// packets' headers.
//
// A kernel that refuses an offload is no failure: the Device works without
// it and its Features method tells what was refused.
func WithOffloads() Option {
	return func(o *options) { o.offloads = true }
}

// WithChecksumVerify makes the Write of a Device with offloads verify the
// TCP and UDP checksum of every packet before telling the kernel to trust
// it (see offload.GROTable.Verify); a packet that fails goes to the kernel
// untouched, to be dropped there. It costs a pass over every payload, and
// is worth it when nothing else protects the packets on their way here,
// such as VXLAN without outer UDP checksums.
func WithChecksumVerify() Option {
	return func(o *options) { o.verify = true }
}

// WithPartialChecksums lets the ReadPartial of a Device with offloads leave
// partial the TCP and UDP checksums that the kernel left to do, rather
// than sum every payload byte (see PartialReader): for a caller that sends
// most packets where nobody looks at the checksum, and completes it for
// the others. Read still completes every checksum. Without WithOffloads it
// changes nothing.
func WithPartialChecksums() Option {
	return func(o *options) { o.partial = true }
}

// WithCPUSteering makes a TUN of several queues hand each packet the
// kernel sends into it to queue (sending CPU mod queues), with an eBPF
// steering program (TUNSETSTEERINGEBPF), instead of the kernel's hash of
// the packet's flow. A reader pinned to the CPUs of its queue is then woken
// on the CPU the packet came from, as the kernel's own tunnels process a
// packet in its sender's context. A flow whose sender moves to another CPU
// moves to another queue: packets still in the old one may overtake new
// ones at that moment. Create fails if the kernel refuses the program.
func WithCPUSteering() Option {
	return func(o *options) { o.steerCPU = true }
}

// WithBusyPoll makes a Read that finds its queue empty poll it for up to
// max, yielding the CPU between polls, before it sleeps (package busypoll):
// the packet that comes meanwhile finds the reader running, not asleep on
// a halted CPU. The window adapts to the traffic, from 0 to max.
func WithBusyPoll(max time.Duration) Option {
	return func(o *options) { o.busyPoll = max }
}

// Features are the offloads a Device negotiated with the kernel.
type Features struct {
	// VirtioHdr: packets cross the kernel boundary behind a virtio-net
	// header (IFF_VNET_HDR), which lets Write hand the kernel merged TCP
	// segments.
	VirtioHdr bool
	// TSO: the kernel may hand Read TCP super-packets and packets whose
	// checksum is left to do (TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6).
	TSO bool
	// USO: the kernel may hand Read UDP super-packets (TUN_F_USO4,
	// TUN_F_USO6; Linux 6.2 and later), and Write hands it merged UDP
	// datagrams.
	USO bool
}

// A FeatureReporter is a Device that may have negotiated offloads: the
// native Linux one.
type FeatureReporter interface {
	// Features reports the offloads in effect, and, as an
	// *OffloadError, why one that WithOffloads asked for is not. A kernel
	// without USO is no error: USO is recent.
	Features() (Features, error)
}

// A PartialReader is a Device whose reads can leave checksums partial: the
// native Linux one.
type PartialReader interface {
	// ReadPartial is Read, except that on a Device created with
	// WithPartialChecksums it leaves partial each TCP or UDP checksum
	// that the kernel left to do, as offload.SplitOptions.PartialChecksums
	// describes, and sets partial[i] for each packet i so left; the
	// others, with partial[i] false, are complete. offload.CompleteChecksum
	// finishes a partial one. len(partial) must be >= len(bufs).
	ReadPartial(bufs [][]byte, sizes []int, partial []bool, offset int) (n int, err error)
}

// An OffloadError reports an offload that the kernel refused. It is not a
// failure: the Device works without the offload.
type OffloadError struct {
	Op  string // what was refused: "IFF_VNET_HDR" or "TUNSETOFFLOAD"
	Err error
}

func (e *OffloadError) Error() string {
	return fmt.Sprintf("tun: kernel refused %s, working without it: %v", e.Op, e.Err)
}

func (e *OffloadError) Unwrap() error { return e.Err }

// ErrDeleted is returned, wrapped, by the calls on a queue whose interface
// someone deleted (ip link del). It is terminal like os.ErrClosed, but not
// the caller's doing: a forwarder must report it, not end quietly.
var ErrDeleted = errors.New("the TUN interface was deleted")

// ErrBadPacket is returned, wrapped with the reason, by a Read that
// dropped a packet the kernel handed over with a virtio-net header that
// does not describe it (a GSO type or layout overlayd does not take). The
// packets read before it are valid, and the queue remains usable.
var ErrBadPacket = errors.New("packet dropped")

// ErrNoHeadroom is returned by the Write of a Device with offloads when
// offset leaves no room for the virtio-net header in front of the packets.
// Nothing was written; the Device remains usable.
var ErrNoHeadroom = errors.New("tun: write with offloads needs offset >= 10 for the virtio-net header")
