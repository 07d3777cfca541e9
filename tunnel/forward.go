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
//  4. encapsulate in place and send the batch with one sendmmsg.
//
// Inbound (routineUnderlayToTUN):
//  1. read a batch of datagrams (recvmmsg) at offset Headroom;
//  2. accept only registered peers' underlay addresses;
//  3. decapsulate by re-slicing, validating the encapsulation and the inner
//     IPv4 header; the inner source must lie in the sender's subnet and the
//     destination in ours;
//  4. write the survivors to the TUN in one call.

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/overlayd/overlayd/encap"
	"github.com/overlayd/overlayd/ringbuf"
	"github.com/overlayd/overlayd/subnet"
	"github.com/overlayd/overlayd/tunnel/tun"
	"github.com/overlayd/overlayd/tunnel/udp"
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
	conn    udp.Conn
	hdr     encap.Header
	peers   *atomic.Pointer[subnet.Table]
	local   netip.Prefix // this host's subnet: inbound destinations must lie in it
	tunAddr netip.Addr   // source of the ICMP errors we generate
	mtu     int          // largest inner packet the peers accept (their TUN MTU)
	stats   *Stats
	log     *slog.Logger
}

// routineTUNToUnderlay reads the TUN and sends to peers until the TUN is
// closed.
func (w *worker) routineTUNToUnderlay() error {
	batchSize := w.tun.BatchSize()
	batch := ringbuf.NewBatch(batchSize, Headroom+maxPacket)
	icmp := ringbuf.NewBatch(batchSize, icmpBufSize)
	var (
		frames   = make([][]byte, 0, batchSize)
		dsts     = make([]netip.AddrPort, 0, batchSize)
		replies  = make([][]byte, 0, batchSize)
		hdrLen   = w.hdr.Len()
		counts   batchStats
		failures int
		limiter  logLimiter
	)
	w.log.Debug("routine started", "routine", "tun-to-underlay", "worker", w.id)
	defer w.log.Debug("routine stopped", "routine", "tun-to-underlay", "worker", w.id)

	for {
		n, err := w.tun.Read(batch.Bufs, batch.Sizes, Headroom)
		if err != nil {
			if isClosed(err) {
				return nil
			}
			if failures++; failures >= maxConsecutiveErrors {
				return err
			}
			limiter.warn(w.log, "TUN read failed", "error", err)
			if n == 0 {
				continue
			}
		} else {
			failures = 0
		}

		table := w.peers.Load()
		frames, dsts, replies = frames[:0], dsts[:0], replies[:0]
		for i := 0; i < n; i++ {
			pkt := batch.Bufs[i][Headroom : Headroom+batch.Sizes[i]]
			dst, ok := encap.IPv4Dst(pkt)
			if !ok {
				counts.drop(DropNotIPv4)
				continue
			}
			peer, ok := table.Lookup(dst)
			if !ok {
				counts.drop(DropNoRoute)
				if m := encap.NetUnreachable(icmp.Bufs[len(replies)], pkt, w.tunAddr); m > 0 {
					replies = append(replies, icmp.Bufs[len(replies)][:m])
				}
				continue
			}
			if len(pkt) > w.mtu {
				counts.drop(DropTooBig)
				if encap.IPv4DF(pkt) {
					if m := encap.FragNeeded(icmp.Bufs[len(replies)], pkt, w.tunAddr, w.mtu); m > 0 {
						replies = append(replies, icmp.Bufs[len(replies)][:m])
					}
				}
				continue
			}
			frame := batch.Bufs[i][Headroom-hdrLen : Headroom+len(pkt)]
			if err := w.hdr.Encap(frame, &peer.Encap); err != nil {
				counts.drop(DropNotIPv4)
				continue
			}
			frames = append(frames, frame)
			dsts = append(dsts, peer.Underlay)
			counts.packets++
			counts.bytes += uint64(len(pkt))
		}

		if len(frames) > 0 {
			sent, err := w.conn.WriteBatch(frames, dsts)
			if err != nil {
				if isClosed(err) {
					return nil
				}
				limiter.warn(w.log, "underlay send failed", "error", err, "unsent", len(frames)-sent)
				counts.drops[DropSendError] += uint64(len(frames) - sent)
				counts.packets -= uint64(len(frames) - sent)
			}
		}
		if len(replies) > 0 {
			if _, err := w.tun.Write(replies, 0); err == nil {
				counts.icmp += uint64(len(replies))
			}
		}
		counts.flushTx(w.stats)
	}
}

// routineUnderlayToTUN receives from peers and writes to the TUN until the
// socket is closed.
func (w *worker) routineUnderlayToTUN() error {
	batchSize := w.conn.BatchSize()
	batch := ringbuf.NewBatch(batchSize, Headroom+maxPacket)
	var (
		views    = make([][]byte, batchSize) // the buffers past the headroom: where datagrams land
		packets  = make([][]byte, 0, batchSize)
		hdrLen   = w.hdr.Len()
		counts   batchStats
		failures int
		limiter  logLimiter
	)
	for i := range views {
		views[i] = batch.Bufs[i][Headroom:]
	}
	w.log.Debug("routine started", "routine", "underlay-to-tun", "worker", w.id)
	defer w.log.Debug("routine stopped", "routine", "underlay-to-tun", "worker", w.id)

	for {
		n, err := w.conn.ReadBatch(views, batch.Sizes, batch.Addrs)
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

		table := w.peers.Load()
		packets = packets[:0]
		for i := 0; i < n; i++ {
			peer, ok := table.ByUnderlay(batch.Addrs[i].Addr())
			if !ok {
				counts.drop(DropUnknownPeer)
				continue
			}
			inner, err := w.hdr.Decap(views[i][:batch.Sizes[i]])
			if err != nil {
				counts.drop(DropMalformed)
				continue
			}
			// Decap validated the IPv4 header, so the addresses are there.
			src := netip.AddrFrom4([4]byte(inner[12:16]))
			dst := netip.AddrFrom4([4]byte(inner[16:20]))
			if !peer.Subnet.Contains(src) {
				counts.drop(DropSpoofed)
				continue
			}
			if !w.local.Contains(dst) {
				counts.drop(DropNotLocal)
				continue
			}
			packets = append(packets, batch.Bufs[i][:Headroom+hdrLen+len(inner)])
			counts.packets++
			counts.bytes += uint64(len(inner))
		}

		if len(packets) > 0 {
			written, err := w.tun.Write(packets, Headroom+hdrLen)
			if err != nil {
				if isClosed(err) {
					return nil
				}
				limiter.warn(w.log, "TUN write failed", "error", err)
				counts.drops[DropTUNWriteError] += uint64(len(packets) - written)
				counts.packets -= uint64(len(packets) - written)
			}
		}
		counts.flushRx(w.stats)
	}
}

// isClosed reports an error that means the device or socket was closed:
// the routine's normal end.
func isClosed(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed)
}

// logLimiter keeps a failing device from flooding the log: at most one
// line a second per routine.
type logLimiter struct{ last time.Time }

func (l *logLimiter) warn(log *slog.Logger, msg string, args ...any) {
	if now := time.Now(); now.Sub(l.last) >= time.Second {
		l.last = now
		log.Warn(msg, args...)
	}
}
