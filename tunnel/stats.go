package tunnel

import "sync/atomic"

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
	DropMalformed                       // RX: bad IP header, lengths that disagree, bad encapsulation
	DropSpoofed                         // RX: inner source outside the sending peer's subnet
	DropNotLocal                        // RX: inner destination outside this host's subnet
	DropTUNWriteError                   // RX: the kernel refused the packet on the TUN
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
}

// StatsSnapshot is a point-in-time copy of Stats, for status and metrics.
type StatsSnapshot struct {
	TxPackets uint64            `json:"tx_packets"`
	TxBytes   uint64            `json:"tx_bytes"`
	RxPackets uint64            `json:"rx_packets"`
	RxBytes   uint64            `json:"rx_bytes"`
	ICMPSent  uint64            `json:"icmp_sent"`
	Drops     map[string]uint64 `json:"drops"`
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
	}
	for r := DropReason(0); r < numDropReasons; r++ {
		snap.Drops[r.String()] = s.Drops[r].Load()
	}
	return snap
}

// batchStats accumulates one batch's counts on the worker's stack before a
// single flush into the shared Stats.
type batchStats struct {
	packets, bytes uint64
	icmp           uint64
	drops          [numDropReasons]uint64
}

func (b *batchStats) drop(r DropReason) { b.drops[r]++ }

// unsent moves packets counted as forwarded to the drops of reason r; each
// holds its payload past offset.
func (b *batchStats) unsent(r DropReason, pkts [][]byte, offset int) {
	for _, p := range pkts {
		b.drops[r]++
		b.packets--
		b.bytes -= uint64(len(p) - offset)
	}
}

func (b *batchStats) flushTx(s *Stats) {
	b.flushCommon(s)
	if b.packets != 0 {
		s.TxPackets.Add(b.packets)
		s.TxBytes.Add(b.bytes)
	}
	*b = batchStats{}
}

func (b *batchStats) flushRx(s *Stats) {
	b.flushCommon(s)
	if b.packets != 0 {
		s.RxPackets.Add(b.packets)
		s.RxBytes.Add(b.bytes)
	}
	*b = batchStats{}
}

func (b *batchStats) flushCommon(s *Stats) {
	if b.icmp != 0 {
		s.ICMPSent.Add(b.icmp)
	}
	for r, n := range b.drops {
		if n != 0 {
			s.Drops[r].Add(n)
		}
	}
}
