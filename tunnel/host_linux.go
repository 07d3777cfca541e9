package tunnel

import (
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/overlayd/overlayd/tunnel/afpacket"
	"github.com/overlayd/overlayd/tunnel/tun"
	"github.com/overlayd/overlayd/tunnel/udp"
	"github.com/overlayd/overlayd/tunnel/underlay"
)

// SystemHost is the Host of a real machine: netlink, /dev/net/tun, UDP or
// AF_PACKET sockets. Log receives what the devices were granted.
type SystemHost struct{ Log *slog.Logger }

var _ Host = SystemHost{}

func (SystemHost) ExtIface(spec string) (ExtIface, error) { return ResolveExtIface(spec) }
func (SystemHost) IPForwarding() (bool, error)            { return IPForwarding() }

func (h SystemHost) OpenTUN(name string, queues int, opts ...tun.Option) ([]tun.Device, error) {
	devs, err := tun.Create(name, queues, opts...)
	if err != nil {
		return nil, fmt.Errorf("create TUN %s: %w", name, err)
	}
	if fr, ok := devs[0].(tun.FeatureReporter); ok {
		f, err := fr.Features()
		h.log().Info("TUN offloads", "tun", name, "virtio_hdr", f.VirtioHdr, "tso", f.TSO, "uso", f.USO)
		if err != nil {
			h.log().Warn("TUN running without some offloads: more system calls and checksums per packet", "error", err)
		}
	}
	return devs, nil
}

func (SystemHost) ConfigureTUN(name string, mtu int, addr, network netip.Prefix) error {
	return ConfigureTUN(name, mtu, addr, network)
}

// ListenUnderlay opens a UDP socket per worker, sharing laddr with
// SO_REUSEPORT and each sending from a source port of its own (so that the
// peer's group hands a flow to the same worker there: udp.Options.Queue),
// or with UnderlayAFPacket an AF_PACKET socket per worker in
// one fanout group. The first one's settings are logged.
func (h SystemHost) ListenUnderlay(kind string, iface ExtIface, laddr netip.AddrPort, workers int, busyPoll time.Duration) ([]underlay.Conn, error) {
	conns := make([]underlay.Conn, 0, workers)
	fanout := new(afpacket.Group) // the AF_PACKET workers share flows, neighbours, guard
	for i := 0; i < workers; i++ {
		var (
			conn underlay.Conn
			err  error
		)
		if kind == UnderlayAFPacket {
			conn, err = h.listenAFPacket(iface, laddr, workers, fanout, i == 0, busyPoll)
		} else {
			conn, err = h.listenSocket(iface, laddr, i, workers, busyPoll)
		}
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("listen on %s: %w", laddr, err)
		}
		conns = append(conns, conn)
	}
	return conns, nil
}

func (h SystemHost) listenAFPacket(iface ExtIface, laddr netip.AddrPort, workers int, fanout *afpacket.Group, first bool, busyPoll time.Duration) (underlay.Conn, error) {
	conn, err := afpacket.Listen(iface.Name, laddr, afpacket.Options{Group: fanout, GSO: true, BusyPoll: busyPoll})
	if err == nil && first {
		eff := conn.(afpacket.Configured).Effective()
		h.log().Info("underlay afpacket", "iface", iface.Name, "addr", laddr, "guard", eff.Guard, "gso", eff.GSO,
			"ring", eff.Ring, "ring_blocks", eff.Blocks, "block_size", eff.BlockSize, "batch", conn.BatchSize(), "queues", workers)
	}
	return conn, err
}

func (h SystemHost) listenSocket(iface ExtIface, laddr netip.AddrPort, worker, workers int, busyPoll time.Duration) (underlay.Conn, error) {
	first := worker == 0
	if first {
		// A crashed afpacket run may have left its tc guard, which would
		// drop every datagram before the socket saw it.
		if err := afpacket.RemoveStaleGuard(iface.Name, laddr); err != nil {
			h.log().Debug("could not check for a stale afpacket guard", "error", err)
		}
	}
	// GSO sends each run of equal datagrams to one peer as one message;
	// GRO receives a flow's datagrams coalesced. Both are probed and stay
	// off where the kernel lacks them.
	conn, err := udp.Listen(laddr, udp.Options{ReusePort: workers > 1, Queue: worker, Queues: workers, GSO: true, GRO: true, BusyPoll: busyPoll})
	c, ok := conn.(udp.Configured)
	if ok && err == nil && workers > 1 {
		h.log().Debug("underlay socket source", "queue", worker, "addr", c.SendAddr())
	}
	if ok && err == nil && first {
		eff := c.Effective()
		h.log().Info("underlay socket", "addr", laddr, "gso", eff.GSO, "gro", eff.GRO,
			"rcvbuf", eff.RecvBuffer, "sndbuf", eff.SendBuffer, "batch", conn.BatchSize(), "queues", workers)
		if err := c.Unsupported(); err != nil {
			h.log().Warn("running without some underlay offloads: more system calls per packet", "error", err)
		}
	}
	return conn, err
}

func (h SystemHost) log() *slog.Logger {
	if h.Log == nil {
		return slog.Default()
	}
	return h.Log
}
