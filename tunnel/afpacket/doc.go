// Package afpacket is overlayd's second underlay: an underlay.Conn on an
// AF_PACKET socket instead of a UDP socket (package udp), selected with
// overlayd run --underlay=afpacket. Linux only, no cgo.
//
// # Receiving
//
// The socket has a TPACKET_V2 receive ring (PACKET_RX_RING) mapped into
// overlayd, walked by ringbuf.V2Ring. A classic BPF filter, attached before
// the socket is bound, lets in only IPv4 UDP datagrams for the tunnel's
// address and port, whole (no fragments). The kernel copies each into the
// next slot of the ring, sized for the interface's MTU, hands the slot over
// at once and wakes the socket; ReadBatch waits for that in poll(2), on
// the socket and on an eventfd that Close makes readable (like the UDP
// socket's, the wait holds the thread, so the kernel wakes the very thread
// that reads: no netpoller hand-off), copies the UDP payloads of every
// slot handed over into the caller's buffers, and gives each slot back as
// soon as it is read. A frame
// larger than a slot (a GSO super-datagram, below) is cut to it, and the
// kernel also queues it whole on the socket (PACKET_COPY_THRESH, marked
// TP_STATUS_COPY), where ReadBatch reads it with read(2), in order. The
// Conns of one overlayd share a PACKET_FANOUT group: the kernel spreads
// flows across them by hash, each flow to one Conn, in order.
//
// Options.Ring = RingV3 gives a TPACKET_V3 ring instead (ringbuf.V3Ring):
// frames packed into blocks, a block handed over when full or after
// Options.BlockTimeout. See Latency for why it is not the default.
//
// ReadBatch checks what the kernel's IPv4 and UDP receive paths would:
// header, lengths (a UDP length shorter than the IP payload is trimmed),
// the IPv4 header checksum, and the UDP checksum unless the kernel vouches
// for it (TP_STATUS_CSUM_VALID, or TP_STATUS_CSUMNOTREADY for frames sent
// on this machine with checksum offload). Frames failing a check are
// dropped and counted (Stats).
//
// Every frame carries a virtio_net_hdr (PACKET_VNET_HDR). A UDP GSO
// super-datagram, which a UDP socket with UDP_SEGMENT on this machine
// sends and which crosses veth pairs and bridges whole, arrives as one
// frame of up to 64 KiB with its segment size there; ReadBatch cuts it up
// into the datagrams it stands for, from the socket queue (RingV2) or the
// ring block (RingV3). Reading these needs Linux 6.2
// (earlier kernels drop them before the ring); on real NICs datagrams are
// segmented before the wire and arrive one by one anyway. A kernel VTEP's
// TCP super-frame, which a VXLAN device sending over a veth with TX
// offloads on hands over whole, arrives the same way, its header saying
// TCP GSO (of the inner packet): ReadBatch delivers it as the one datagram
// it is, and the TUN cuts the inner TCP packet (tun.Device.Write).
//
// # Sending
//
// WriteBatch writes a virtio_net_hdr, Ethernet, IPv4 (DF, TTL 64, an
// identification counter, header checksum) and UDP header per datagram
// into buffers of its own and sends them with the caller's payloads as
// iovecs through underlay.Sender: nothing is copied in user space. With
// Options.GSO, a run of equal-sized datagrams to one peer goes as one UDP
// GSO super-datagram, as from a UDP socket with UDP_SEGMENT: on a veth it
// crosses to the peer whole, one skb for up to 64 datagrams, which is most
// of what a UDP socket gains over AF_PACKET there. A single datagram
// carries a complete UDP checksum computed here; a super-datagram asks
// for checksum offload, and the kernel or the NIC completes each
// segment's where it leaves the machine. Frames go to the driver directly
// (PACKET_QDISC_BYPASS), past the qdisc, the routing table and netfilter,
// which also means tcpdump on the sending host does not see them; the
// receiving side does.
//
// The destination MAC address is that of the peer's next hop in the
// kernel's tables: RTM_GETROUTE for the next hop, the neighbour table for
// its address. A background goroutine per Group keeps a snapshot that
// WriteBatch reads without locks. A destination met for the first time is
// looked up and, if the kernel has no usable neighbour entry, the kernel
// is asked to resolve one (NTF_USE, as if it had a packet to send); that
// first WriteBatch waits up to 20 ms for the answer, later ones drop the
// destination's datagrams (ErrNoNeighbour, counted) until it comes. The
// neighbour table is followed through a netlink subscription, so a changed
// MAC address or a failed entry takes effect at once, and every 30 s each
// next hop in use is confirmed again: frames sent through AF_PACKET never
// confirm reachability the way the kernel's own traffic does, so without
// that a peer that changed its MAC address quietly would not be noticed.
//
// # The kernel's own stack
//
// The kernel still receives every datagram the ring takes: AF_PACKET only
// taps the receive path. With nothing listening on the port it would
// answer each with an ICMP port unreachable. A Guard prevents that:
//
//   - GuardTC (the default where available) adds a cls_bpf filter, the
//     same classic program in direct-action mode, to the interface's tc
//     ingress hook (adding a clsact qdisc if there is none). tc ingress
//     runs right after the AF_PACKET taps, before IP: the datagram costs
//     the kernel one small BPF program and a free. Frames it does not
//     match go on untouched (TC_ACT_UNSPEC), other filters included.
//     First fragments are dropped too, so no datagram for the port is
//     ever reassembled and answered.
//   - GuardSocket binds a UDP socket to the address whose socket filter
//     drops everything: each datagram costs the kernel its IP receive
//     path, a route lookup, a socket lookup and the filter, and no ICMP
//     is sent.
//   - An nftables or iptables raw PREROUTING drop would sit between the
//     two, after the IP header checks but before routing; it needs a
//     rule set of its own, and was not worth one more mechanism.
//
// BenchmarkGuard puts the two through a veth pair with 64-byte datagrams
// (one batch of 64 through both kernels per op). On the 2-core test VM,
// otherwise idle, a datagram took 3.7 to 4.3 µs with the tc filter and 4.4
// to 5.2 µs with the socket over three runs: the filter saves 0.5 to 1 µs
// per datagram, 10 to 20% of its whole trip here; under load from other
// jobs the two blurred into the noise. A GSO super-datagram pays either
// once for up to 64 datagrams. The tc filter is the default, as the
// cheaper and as it keeps the kernel's IP and UDP code out of the way. Its
// drawback is that it outlives a killed process: the next Listen for the
// same address replaces it, overlayd with --underlay=socket removes it
// (RemoveStaleGuard), and `tc filter del dev <iface> ingress pref 256`
// removes it by hand.
//
// # Latency
//
// TPACKET_V3 hands blocks over when they are full or their timer expires,
// and only then wakes the reader. On a busy link blocks fill quickly; on a
// quiet one every datagram waits for the timer, 1 ms by default and at
// least 1 ms (the kernel counts milliseconds), on every hop: a 64-byte TCP
// request/response through the overlay between two emulated hosts took 1
// to 2 ms (p50) against 0.2 ms with UDP sockets. TPACKET_V2 hands each
// datagram over as it arrives, and the reader still drains whatever has
// arrived per wake-up. With the reader asleep in poll(2) rather than in
// Go's netpoller (which cost another 70 µs per round trip), the medians
// of three runs of overlayd-lab bench --quick on the 2-core test VM under
// load from other jobs put it on par with the socket: TCP request/response
// p50 212 µs against 194, UDP 196 against 218; TCP 1 stream 3.6 against
// 3.3 Gbit/s, 4 streams 3.1 against 3.7, 64-byte UDP 62 against 52 kpps,
// all within the spread of the runs. Throughput was not lower than with
// V3 either. A slot per frame costs memory for small frames (a 2 KiB slot
// for a 64-byte datagram), which V3 packs; the default 4 MiB ring holds
// 2048 datagrams at MTU 1500, 256 at MTU 9000.
//
// The socket is not in Go's netpoller either: WriteBatch too sleeps in
// poll(2), when the send buffer is full. Registered there (as an *os.File),
// the socket woke the runtime's epoll waiter for every frame received and
// every send completed: two thread wake-ups per datagram that found nobody
// waiting, which kept busy polling from paying off on this underlay
// (doc/DESIGN-NOTES.md; TestSocketOutOfNetpoller keeps it out).
//
// # Limits
//
// IPv4 on Ethernet interfaces only; datagrams for the address that arrive
// on another interface are not seen (the kernel answers them). Kernel
// features used: TPACKET_V2 with PACKET_COPY_THRESH (2.6.27), TPACKET_V3
// (3.2, RingV3 only), PACKET_QDISC_BYPASS (3.14), fanout
// with PACKET_FANOUT_FLAG_UNIQUEID (4.x), PACKET_IGNORE_OUTGOING (4.20)
// and the fanout flag of the same name (recent; done without where
// missing), UDP GSO in the virtio_net_hdr (6.2; WriteBatch turns GSO off
// when the kernel refuses it, and says so with an
// *underlay.GSODisabledError).
package afpacket
