package tunnel

import (
	"errors"
	"math/bits"
	"sync/atomic"

	"github.com/overlayd/overlayd/subnet"
	"github.com/overlayd/overlayd/tunnel/tun"
	"github.com/overlayd/overlayd/tunnel/underlay"
)

// DropReason says why the forwarder dropped a packet. Every drop is counted,
// never logged per packet.
type DropReason int

const (
	DropNotIPv4       DropReason = iota // TX: a TUN packet that is not IPv4, or shorter than its header
	DropNoRoute                         // TX: no peer owns the destination
	DropTooBig                          // TX: larger than the path MTU allows
	DropChecksumError                   // TX: a checksum the TUN left partial that cannot be completed
	DropEncapError                      // TX: the peer's encapsulation header cannot be written (e.g. a VNI out of range)
	DropSendError                       // TX: the underlay refused the datagram
	DropUnknownPeer                     // RX: the sender is not a registered peer
	DropMalformed                       // RX: bad IP header, lengths that disagree, bad encapsulation; TX: a TUN packet its virtio-net header does not describe
	DropSpoofed                         // RX: inner source outside the sending peer's subnet
	DropNotLocal                        // RX: inner destination outside this host's subnet
	DropTUNWriteError                   // RX: the kernel refused the packet on the TUN; TX: it refused an ICMP error written back
	DropOversize                        // RX: longer than the TUN MTU, DF set, and not TCP the TUN can cut (a UDP super-frame)
	numDropReasons
)

var dropNames = [numDropReasons]string{
	DropNotIPv4:       "not_ipv4",
	DropNoRoute:       "no_route",
	DropTooBig:        "too_big",
	DropChecksumError: "checksum_error",
	DropEncapError:    "encap_error",
	DropSendError:     "send_error",
	DropUnknownPeer:   "unknown_peer",
	DropMalformed:     "malformed",
	DropSpoofed:       "spoofed",
	DropNotLocal:      "not_local",
	DropTUNWriteError: "tun_write_error",
	DropOversize:      "oversize",
}

func (r DropReason) String() string { return dropNames[r] }

// Stats are the forwarder's counters, shared by all workers. Workers add
// once per batch, not once per packet, to keep the cache line quiet.
type Stats struct {
	TxPackets, TxBytes atomic.Uint64 // inner packets, and their bytes, sent to peers
	RxPackets, RxBytes atomic.Uint64 // inner packets, and their bytes, written into the TUN
	ICMPSent           atomic.Uint64 // ICMP errors written back into the TUN
	Drops              [numDropReasons]atomic.Uint64

	// The firewall rules' keeper (masquerade and forward rules) adds one to
	// FirewallChecks each time it checks that its rules are in place, and
	// one to FirewallRepairs each time it had to put them back. /metrics
	// shows them as overlayd_firewall_checks_total and
	// overlayd_firewall_repairs_total.
	FirewallChecks, FirewallRepairs atomic.Uint64
}

// StatsSnapshot is a point-in-time copy of Stats, for status and metrics.
type StatsSnapshot struct {
	TxPackets uint64            `json:"tx_packets"`
	TxBytes   uint64            `json:"tx_bytes"`
	RxPackets uint64            `json:"rx_packets"`
	RxBytes   uint64            `json:"rx_bytes"`
	ICMPSent  uint64            `json:"icmp_sent"`
	Drops     map[string]uint64 `json:"drops"`

	FirewallChecks  uint64 `json:"firewall_checks"`
	FirewallRepairs uint64 `json:"firewall_repairs"`
}

// Snapshot copies the counters.
func (s *Stats) Snapshot() StatsSnapshot {
	snap := StatsSnapshot{
		TxPackets: s.TxPackets.Load(),
		TxBytes:   s.TxBytes.Load(),
		RxPackets: s.RxPackets.Load(),
		RxBytes:   s.RxBytes.Load(),
		ICMPSent:  s.ICMPSent.Load(),
		Drops:     make(map[string]uint64, numDropReasons),

		FirewallChecks:  s.FirewallChecks.Load(),
		FirewallRepairs: s.FirewallRepairs.Load(),
	}
	for r := DropReason(0); r < numDropReasons; r++ {
		snap.Drops[r.String()] = s.Drops[r].Load()
	}
	return snap
}

// batchStats accumulates one batch's counts on the worker's stack before a
// single flush into the shared Stats. It also lists, in order, the peer of
// each packet forwarded and its size (newBatchStats sizes the lists once),
// so that the peers' counters get one add per run of packets to the same
// peer, after the batch went out.
type batchStats struct {
	icmp  uint64
	drops [numDropReasons]uint64
	// The packets forwarded, in order: each one's peer counters and size.
	peers []*subnet.PeerDirCounters
	sizes []int
}

func newBatchStats(batchSize int) batchStats {
	return batchStats{peers: make([]*subnet.PeerDirCounters, 0, batchSize), sizes: make([]int, 0, batchSize)}
}

func (b *batchStats) drop(r DropReason) { b.drops[r]++ }

// peerDrop counts a drop of a packet whose peer is known; drops are rare,
// so the peer's counter is added to at once.
func (b *batchStats) peerDrop(r DropReason, c *subnet.PeerDirCounters) {
	b.drops[r]++
	c.Drops.Add(1)
}

// forwarded counts a packet of size bytes handed on, to or from the peer
// whose counters c are.
func (b *batchStats) forwarded(c *subnet.PeerDirCounters, size int) {
	b.peers = append(b.peers, c)
	b.sizes = append(b.sizes, size)
}

// unsent moves the packets counted as forwarded from the from'th on to the
// drops of reason r: the device took only the first from.
func (b *batchStats) unsent(r DropReason, from int) {
	for i := from; i < len(b.peers); i++ {
		b.drops[r]++
		b.peers[i].Drops.Add(1)
	}
	b.peers, b.sizes = b.peers[:from], b.sizes[:from]
}

// unsentBy moves the packets of a batch of total that the underlay or the
// TUN did not take to the drops of reason r: those its *underlay.WriteError
// or *tun.WriteError lists, if they are all that went unsent, else all from
// the sent'th on.
func (b *batchStats) unsentBy(r DropReason, sent, total int, err error) {
	var refused []int
	if werr, ok := errors.AsType[*underlay.WriteError](err); ok {
		refused = werr.Refused
	} else if werr, ok := errors.AsType[*tun.WriteError](err); ok {
		refused = werr.Refused
	}
	if len(refused) > 0 && len(refused) == total-sent && ascendingBelow(refused, len(b.peers)) {
		b.unsentAt(r, refused)
		return
	}
	b.unsent(r, sent)
}

// ascendingBelow reports whether idx is strictly ascending and below n, as
// unsentAt needs it: a list that is not would leave drops uncounted.
func ascendingBelow(idx []int, n int) bool {
	prev := -1
	for _, i := range idx {
		if i <= prev || i >= n {
			return false
		}
		prev = i
	}
	return true
}

// unsentAt moves the packets counted as forwarded at the indices refused
// (ascending) to the drops of reason r, and so to their own peers.
func (b *batchStats) unsentAt(r DropReason, refused []int) {
	keep := 0
	for i := range b.peers {
		if len(refused) > 0 && refused[0] == i {
			refused = refused[1:]
			b.drops[r]++
			b.peers[i].Drops.Add(1)
			continue
		}
		b.peers[keep], b.sizes[keep] = b.peers[i], b.sizes[i]
		keep++
	}
	b.peers, b.sizes = b.peers[:keep], b.sizes[:keep]
}

func (b *batchStats) flushTx(s *Stats) {
	if packets, bytes := b.flushCommon(s); packets != 0 {
		s.TxPackets.Add(packets)
		s.TxBytes.Add(bytes)
	}
	b.reset()
}

func (b *batchStats) flushRx(s *Stats) {
	if packets, bytes := b.flushCommon(s); packets != 0 {
		s.RxPackets.Add(packets)
		s.RxBytes.Add(bytes)
	}
	b.reset()
}

// packets and bytes count what was forwarded.
func (b *batchStats) packets() uint64 { return uint64(len(b.peers)) }

func (b *batchStats) bytes() (n uint64) {
	for _, size := range b.sizes {
		n += uint64(size)
	}
	return n
}

// flushCommon adds the batch's ICMP, drop and per-peer counts to s and the
// peers, and returns the packets and bytes forwarded.
func (b *batchStats) flushCommon(s *Stats) (packets, bytes uint64) {
	if b.icmp != 0 {
		s.ICMPSent.Add(b.icmp)
	}
	for r, n := range b.drops {
		if n != 0 {
			s.Drops[r].Add(n)
		}
	}
	// One add per run of packets to the same peer.
	var (
		cur                  *subnet.PeerDirCounters
		runPackets, runBytes uint64
	)
	for i, c := range b.peers {
		if c != cur {
			if cur != nil {
				cur.Packets.Add(runPackets)
				cur.Bytes.Add(runBytes)
			}
			cur, runPackets, runBytes = c, 0, 0
		}
		runPackets++
		runBytes += uint64(b.sizes[i])
		bytes += uint64(b.sizes[i])
	}
	if cur != nil {
		cur.Packets.Add(runPackets)
		cur.Bytes.Add(runBytes)
	}
	return uint64(len(b.peers)), bytes
}

// reset zeroes the counts and keeps the lists' storage.
func (b *batchStats) reset() {
	*b = batchStats{peers: b.peers[:0], sizes: b.sizes[:0]}
}

// batchSizeBounds are the upper bounds of the batch size histogram's
// buckets: powers of two, up to the largest batch a device reads (128).
var batchSizeBounds = [...]int{1, 2, 4, 8, 16, 32, 64, 128}

// batchHistogram counts the sizes of the batches one routine read. Only
// its routine writes it, one add per bucket and one to the sum per batch;
// /metrics reads it at scrape time.
type batchHistogram struct {
	counts [len(batchSizeBounds) + 1]atomic.Uint64 // per bucket, not cumulative; the last is above every bound
	sum    atomic.Uint64
}

func (h *batchHistogram) observe(n int) {
	if n <= 0 {
		return
	}
	i := min(bits.Len(uint(n-1)), len(batchSizeBounds)) // the first bound >= n
	h.counts[i].Add(1)
	h.sum.Add(uint64(n))
}

// batchSizes is a snapshot of batchHistograms summed.
type batchSizes struct {
	counts [len(batchSizeBounds) + 1]uint64
	sum    uint64
}

func (s *batchSizes) add(h *batchHistogram) {
	for i := range h.counts {
		s.counts[i] += h.counts[i].Load()
	}
	s.sum += h.sum.Load()
}
