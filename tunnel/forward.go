package tunnel

// The data path. Each TUN queue has one pair of goroutines and its own
// underlay socket; nothing is shared between pairs but the peer table and
// the counters.
//
// Outbound (routineTUNToUnderlay):
//  1. read a batch from the TUN at offset Headroom, so the encapsulation
//     header can be written in front of each packet in place;
//  2. load the peer table once for the batch; look up each destination;
//  3. answer what cannot be sent (no peer, too big) with an ICMP error back
//     into the TUN, as a router would;
//  4. complete the TCP/UDP checksums the TUN left partial, for the peers
//     that check them (flanneld, kernel VTEPs): an overlayd peer with
//     offloads never does;
//  5. encapsulate in place and send the batch with one sendmmsg.
//
// Inbound (routineUnderlayToTUN):
//  1. read a batch of datagrams (recvmmsg) at offset Headroom;
//  2. accept only registered peers' underlay addresses;
//  3. decapsulate by re-slicing, validating the encapsulation and the inner
//     IPv4 header; the inner source must lie in the sender's subnet and the
//     destination in ours;
//  4. write the survivors to the TUN in one call.
//
// Each routine runs to completion: when its source waits in the kernel
// (kernelWaiter), the kernel wakes the routine's thread, which reads,
// processes and writes with no netpoller and no goroutine hand-off on the
// way (doc/DESIGN-NOTES.md, "Latency").

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/overlayd/overlayd/encap"
	"github.com/overlayd/overlayd/encap/offload"
	"github.com/overlayd/overlayd/ringbuf"
	"github.com/overlayd/overlayd/subnet"
	"github.com/overlayd/overlayd/tunnel/idlepoll"
	"github.com/overlayd/overlayd/tunnel/tun"
	"github.com/overlayd/overlayd/tunnel/underlay"
)

const (
	// Headroom is reserved in front of every packet buffer: room for any
	// encapsulation header (VXLAN 22 bytes), and later for a virtio-net
	// header and AF_PACKET's Ethernet/IP/UDP headers.
	Headroom = 64
	// maxPacket is the largest packet a buffer holds.
	maxPacket = 65535
	// icmpBufSize holds an ICMP error: IP + ICMP + quoted header and 8 bytes.
	icmpBufSize = 20 + 8 + 60 + 8
	// maxConsecutiveErrors ends a routine whose device keeps failing, rather
	// than spinning on it.
	maxConsecutiveErrors = 10
)

// worker forwards between one TUN queue and one underlay socket.
type worker struct {
	id      int
	tun     tun.Device
	conn    underlay.Conn
	hdr     encap.Header
	peers   *atomic.Pointer[subnet.Table]
	local   netip.Prefix // this host's subnet: inbound destinations must lie in it
	tunAddr netip.Addr   // the TUN's own address: never the source of our ICMP errors (icmpSource)
	mtu     int          // largest inner packet the peers accept (their TUN MTU)
	pin     cpuPin       // the CPUs its routines run on (--steering=cpu)
	idle    *idlepoll.Governor
	stats   *Stats
	log     *slog.Logger

	// The sizes of the batches each routine read, for /metrics.
	txBatches, rxBatches batchHistogram
}

// txScratch is the outbound routine's per-batch state, allocated once.
type txScratch struct {
	batch   *ringbuf.Batch // packets read from the TUN, at offset Headroom
	partial []bool         // per packet read: its checksum is left partial (tun.PartialReader)
	icmp    *ringbuf.Batch // ICMP errors to write back into the TUN, at offset Headroom
	frames  [][]byte       // encapsulated datagrams, ready to send
	dsts    []netip.AddrPort
	replies [][]byte
	counts  batchStats
}

func newTxScratch(batchSize int) *txScratch {
	return &txScratch{
		batch:   ringbuf.NewBatch(batchSize, Headroom+maxPacket),
		partial: make([]bool, batchSize),
		icmp:    ringbuf.NewBatch(batchSize, Headroom+icmpBufSize),
		frames:  make([][]byte, 0, batchSize),
		dsts:    make([]netip.AddrPort, 0, batchSize),
		replies: make([][]byte, 0, batchSize),
		counts:  newBatchStats(batchSize),
	}
}

// encapsulate turns the n packets read into tx.batch into datagrams for
// their peers (tx.frames, tx.dsts) and ICMP errors for what cannot go
// (tx.replies). A checksum the TUN left partial (tx.partial) stays so for
// a peer that takes it so, and is completed for the others. It makes no
// system call and allocates nothing.
func (w *worker) encapsulate(tx *txScratch, n int, table *subnet.Table) {
	hdrLen := w.hdr.Len()
	tx.frames, tx.dsts, tx.replies = tx.frames[:0], tx.dsts[:0], tx.replies[:0]
	for i := 0; i < n; i++ {
		pkt := tx.batch.Bufs[i][Headroom : Headroom+tx.batch.Sizes[i]]
		dst, ok := encap.IPv4Dst(pkt)
		if !ok {
			tx.counts.drop(DropNotIPv4)
			continue
		}
		peer, ok := table.Lookup(dst)
		if !ok {
			tx.counts.drop(DropNoRoute)
			tx.reply(encap.NetUnreachable(tx.icmp.Bufs[len(tx.replies)][Headroom:], pkt, w.icmpSource(dst)))
			continue
		}
		if len(pkt) > w.mtu {
			tx.counts.peerDrop(DropTooBig, &peer.Counters.Tx)
			if encap.IPv4DF(pkt) {
				tx.reply(encap.FragNeeded(tx.icmp.Bufs[len(tx.replies)][Headroom:], pkt, w.icmpSource(dst), w.mtu))
			}
			continue
		}
		if tx.partial[i] && !peer.PartialChecksums && offload.CompleteChecksum(pkt) != nil {
			tx.counts.peerDrop(DropChecksumError, &peer.Counters.Tx) // the TUN should mark only what it can complete
			continue
		}
		frame := tx.batch.Bufs[i][Headroom-hdrLen : Headroom+len(pkt)]
		if err := w.hdr.Encap(frame, &peer.Encap); err != nil {
			tx.counts.peerDrop(DropEncapError, &peer.Counters.Tx)
			continue
		}
		tx.frames = append(tx.frames, frame)
		tx.dsts = append(tx.dsts, peer.Underlay)
		tx.counts.forwarded(&peer.Counters.Tx, len(pkt))
	}
}

// icmpSource is the source of an ICMP error about a packet to dst: the
// address of dst's subnet, as if the router of that subnet answered. Not
// the TUN's own address: the kernel drops a packet that arrives on the TUN
// from one of its own addresses as a martian, so the container would never
// see the error. The subnet's address is not local here (no lease of ours,
// or a peer's) and routes back through the TUN, so reverse-path filtering
// passes too. A packet to our own subnet that came into the TUN (no
// bridge) is answered from its destination.
func (w *worker) icmpSource(dst netip.Addr) netip.Addr {
	src := netip.PrefixFrom(dst, w.local.Bits()).Masked().Addr()
	if src == w.tunAddr {
		return dst
	}
	return src
}

// reply keeps an ICMP error of length m built past the headroom of the next
// icmp buffer (the TUN may need the headroom for its virtio-net header).
func (tx *txScratch) reply(m int) {
	if m > 0 {
		tx.replies = append(tx.replies, tx.icmp.Bufs[len(tx.replies)][:Headroom+m])
	}
}

// A kernelWaiter is a TUN queue or underlay socket whose reads sleep in
// the kernel, holding their thread, rather than in Go's netpoller.
type kernelWaiter interface{ WaitsInKernel() bool }

// yieldEvery is how often a routine whose source waits in the kernel
// passes through the scheduler. Such a routine never parks: it goes from
// system call to system call on its P, and to sysmon it looks like a
// goroutine hogging its P (forcePreemptNS, 10 ms). sysmon then takes the
// P away at each of its ticks, which it shortens to 20 µs for as long as
// it finds Ps to take: a storm of futex wake-ups and handoffs, measured at
// ~2,800 sysmon wake-ups a second per daemon during a ping-pong.
const yieldEvery = 5 * time.Millisecond

// yielder paces a routine's runtime.Gosched calls; see yieldEvery.
// It also keeps a pinned routine's thread pinned (--steering=cpu): the
// routine may come back from Gosched on another thread, so it releases the
// one it leaves and pins the one it lands on.
type yielder struct {
	on   bool
	last time.Time
	pin  threadPin
}

// newYielder is called on the routine's goroutine, whose thread it pins
// if src waits in the kernel: a goroutine that parks in Go may come back on
// any thread, so pinning its thread would pin nothing. The routine calls
// done as it returns.
func newYielder(src any, pin cpuPin) yielder {
	y := yielder{on: waitsInKernel(src), last: time.Now()}
	if y.on {
		y.pin.cpuPin = pin
		y.pin.hold()
	}
	return y
}

// done gives the pinned thread back its CPUs as the routine ends.
func (y *yielder) done() { y.pin.release() }

func waitsInKernel(src any) bool {
	kw, ok := src.(kernelWaiter)
	return ok && kw.WaitsInKernel()
}

// baseProcs is GOMAXPROCS as the runtime chose it (or the operator set it),
// before reserveProcs added to it.
var baseProcs = sync.OnceValue(func() int { return runtime.GOMAXPROCS(0) })

// reserveProcs gives each of the waiting routines, which sleep in a system
// call holding their thread, a P of its own on top of the runtime's
// default. With fewer Ps than sleepers, every sleeper that wakes finds its
// P taken: sysmon keeps retaking Ps from system calls (ticking at 20 µs),
// and a woken routine waits for a P or wakes another thread to get one. On
// a 2-core guest with four sleepers this tripled the context switches of a
// ping and doubled overlayd's CPU per echo (doc/DESIGN-NOTES.md, "A P for
// every sleeper"). An idle P holds no thread; the data path allocates
// nothing, so the garbage collector, whose idle workers use idle Ps, runs
// rarely. Setting GOMAXPROCS stops the runtime from following a cgroup's
// CPU limit as it changes; a valid GOMAXPROCS in the environment is the
// operator's choice and is left alone.
func reserveProcs(waiting int) int {
	if n, err := strconv.Atoi(os.Getenv("GOMAXPROCS")); (err == nil && n > 0) || waiting == 0 {
		return runtime.GOMAXPROCS(0)
	}
	if want := baseProcs() + waiting; want > runtime.GOMAXPROCS(0) {
		runtime.GOMAXPROCS(want)
	}
	return runtime.GOMAXPROCS(0)
}

// tick is called once per batch.
func (y *yielder) tick() {
	if !y.on {
		return
	}
	if now := time.Now(); now.Sub(y.last) >= yieldEvery {
		y.last = now
		y.pin.release()
		runtime.Gosched()
		y.pin.hold()
	}
}

// routineTUNToUnderlay reads the TUN and sends to peers until the TUN is
// closed.
func (w *worker) routineTUNToUnderlay() error {
	pace := newYielder(w.tun, w.pin)
	defer pace.done()
	tx := newTxScratch(w.tun.BatchSize())
	read := func() (int, error) { return w.tun.Read(tx.batch.Bufs, tx.batch.Sizes, Headroom) }
	if pr, ok := w.tun.(tun.PartialReader); ok {
		read = func() (int, error) { return pr.ReadPartial(tx.batch.Bufs, tx.batch.Sizes, tx.partial, Headroom) }
	}
	var (
		failures int
		limiter  logLimiter
	)
	w.log.Debug("routine started", "routine", "tun-to-underlay", "worker", w.id)
	defer w.log.Debug("routine stopped", "routine", "tun-to-underlay", "worker", w.id)

	for {
		n, err := read()
		if err != nil {
			if isClosed(err) {
				return nil
			}
			if errors.Is(err, tun.ErrDeleted) {
				return tunDeleted(err)
			}
			if errors.Is(err, tun.ErrBadPacket) { // the packet's fault, not the device's
				tx.counts.drop(DropMalformed)
				limiter.debug(w.log, "TUN packet dropped", "error", err)
				failures = 0
			} else if failures++; failures >= maxConsecutiveErrors {
				return err
			} else {
				limiter.warn(w.log, "TUN read failed", "error", err)
			}
			if n == 0 {
				tx.counts.flushTx(w.stats)
				continue
			}
		} else {
			failures = 0
		}
		w.txBatches.observe(n)
		w.idle.Busy()

		w.encapsulate(tx, n, w.peers.Load())
		if len(tx.frames) > 0 {
			sent, err := w.conn.WriteBatch(tx.frames, tx.dsts)
			if err != nil {
				if isClosed(err) {
					return nil
				}
				if errors.Is(err, underlay.ErrGSODisabled) { // once per Conn
					w.log.Warn("underlay GSO turned off: sending datagram by datagram", "worker", w.id, "error", err)
				} else {
					limiter.warn(w.log, "underlay send failed", "error", err, "unsent", len(tx.frames)-sent)
				}
				tx.counts.unsentBy(DropSendError, sent, len(tx.frames), err)
			}
		}
		if len(tx.replies) > 0 {
			written, err := w.tun.Write(tx.replies, Headroom)
			tx.counts.icmp += uint64(written)
			if err != nil && !isClosed(err) && !errors.Is(err, tun.ErrDeleted) {
				// Closed or deleted ends this routine at its next Read.
				// Otherwise the errors not written (refused, or not tried
				// after a failure) are lost: count them so.
				limiter.warn(w.log, "TUN write of ICMP errors failed", "error", err)
				tx.counts.drops[DropTUNWriteError] += uint64(len(tx.replies) - written)
			}
		}
		tx.counts.flushTx(w.stats)
		pace.tick()
	}
}

// rxScratch is the inbound routine's per-batch state, allocated once.
type rxScratch struct {
	batch   *ringbuf.Batch // datagrams land at offset Headroom
	views   [][]byte       // batch buffers past the headroom: what recvmmsg fills
	packets [][]byte       // decapsulated packets, to write at Headroom+hdr.Len()
	counts  batchStats
}

func newRxScratch(batchSize int) *rxScratch {
	rx := &rxScratch{
		batch:   ringbuf.NewBatch(batchSize, Headroom+maxPacket),
		views:   make([][]byte, batchSize),
		packets: make([][]byte, 0, batchSize),
		counts:  newBatchStats(batchSize),
	}
	for i := range rx.views {
		rx.views[i] = rx.batch.Bufs[i][Headroom:]
	}
	return rx
}

// decapsulate checks the n datagrams received into rx and keeps the inner
// packets that may enter the TUN in rx.packets: from a registered peer,
// well-formed, from inside that peer's subnet, to inside ours. It makes no
// system call and allocates nothing.
func (w *worker) decapsulate(rx *rxScratch, n int, table *subnet.Table) {
	hdrLen := w.hdr.Len()
	rx.packets = rx.packets[:0]
	// A batch holds runs of datagrams from one peer (a UDP GRO datagram
	// cut up): look a sender up once per run, not once per datagram.
	var (
		lastFrom netip.Addr
		lastPeer *subnet.Peer
	)
	for i := 0; i < n; i++ {
		peer := lastPeer
		if from := rx.batch.Addrs[i].Addr(); peer == nil || from != lastFrom {
			p, ok := table.ByUnderlay(from)
			if !ok {
				rx.counts.drop(DropUnknownPeer)
				continue
			}
			peer, lastFrom, lastPeer = p, from, p
		}
		inner, err := w.hdr.Decap(rx.views[i][:rx.batch.Sizes[i]])
		if err != nil {
			rx.counts.peerDrop(DropMalformed, &peer.Counters.Rx)
			continue
		}
		// Decap validated the IPv4 header, so the addresses are there.
		src := netip.AddrFrom4([4]byte(inner[12:16]))
		dst := netip.AddrFrom4([4]byte(inner[16:20]))
		if !peer.Subnet.Contains(src) {
			rx.counts.peerDrop(DropSpoofed, &peer.Counters.Rx)
			continue
		}
		if !w.local.Contains(dst) {
			rx.counts.peerDrop(DropNotLocal, &peer.Counters.Rx)
			continue
		}
		if len(inner) > w.mtu && !w.fitsTUN(inner) {
			rx.counts.drop(DropOversize)
			continue
		}
		rx.packets = append(rx.packets, rx.batch.Bufs[i][:Headroom+hdrLen+len(inner)])
		rx.counts.forwarded(&peer.Counters.Rx, len(inner))
	}
}

// fitsTUN reports whether the TUN takes pkt, a packet longer than its MTU:
// a TCP super-frame, as a kernel VTEP on a veth with offloads sends them
// whole, which the TUN's Write cuts at the MTU; or a packet without DF,
// which the kernel fragments as any router would. Anything else is a UDP
// super-frame (or a peer's mistake): its datagram boundaries did not
// cross the wire, and the kernel would drop it at the next link anyway.
func (w *worker) fitsTUN(pkt []byte) bool {
	if w.mtu <= 0 || !encap.IPv4DF(pkt) {
		return true
	}
	_, ok := offload.SuperPacketHdr(pkt, w.mtu)
	return ok
}

// routineUnderlayToTUN receives from peers and writes to the TUN until the
// socket is closed.
func (w *worker) routineUnderlayToTUN() error {
	pace := newYielder(w.conn, w.pin)
	defer pace.done()
	rx := newRxScratch(w.conn.BatchSize())
	offset := Headroom + w.hdr.Len()
	var (
		failures int
		limiter  logLimiter
	)
	w.log.Debug("routine started", "routine", "underlay-to-tun", "worker", w.id)
	defer w.log.Debug("routine stopped", "routine", "underlay-to-tun", "worker", w.id)

	for {
		n, err := w.conn.ReadBatch(rx.views, rx.batch.Sizes, rx.batch.Addrs)
		if err != nil {
			if isClosed(err) {
				return nil
			}
			if failures++; failures >= maxConsecutiveErrors {
				return err
			}
			limiter.warn(w.log, "underlay receive failed", "error", err)
			if n == 0 {
				continue
			}
		} else {
			failures = 0
		}
		w.rxBatches.observe(n)
		w.idle.Busy()

		w.decapsulate(rx, n, w.peers.Load())
		if len(rx.packets) > 0 {
			written, err := w.tun.Write(rx.packets, offset)
			if err != nil {
				if isClosed(err) {
					return nil
				}
				if errors.Is(err, tun.ErrDeleted) {
					return tunDeleted(err)
				}
				limiter.warn(w.log, "TUN write failed", "error", err)
				rx.counts.unsentBy(DropTUNWriteError, written, len(rx.packets), err)
			}
		}
		rx.counts.flushRx(w.stats)
		pace.tick()
	}
}

// isClosed reports an error that means the device or socket was closed:
// the routine's normal end.
func isClosed(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed)
}

// tunDeleted is what a routine ends with when someone deleted the TUN
// interface under it: nothing can be forwarded any more, and overlayd ends
// so that its supervisor starts it again, which recreates the interface.
func tunDeleted(err error) error {
	return fmt.Errorf("%w: overlayd cannot forward without it and stops; start it again to recreate the interface", err)
}

// logLimiter keeps a failing device from flooding the log: at most one
// line a second per routine.
type logLimiter struct{ last time.Time }

func (l *logLimiter) warn(log *slog.Logger, msg string, args ...any) {
	l.log(log, slog.LevelWarn, msg, args...)
}

// debug is warn for what is counted already, and only logged for debugging.
func (l *logLimiter) debug(log *slog.Logger, msg string, args ...any) {
	l.log(log, slog.LevelDebug, msg, args...)
}

func (l *logLimiter) log(log *slog.Logger, level slog.Level, msg string, args ...any) {
	if now := time.Now(); now.Sub(l.last) >= time.Second {
		l.last = now
		log.Log(context.Background(), level, msg, args...)
	}
}
