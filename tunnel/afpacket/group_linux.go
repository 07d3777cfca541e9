package afpacket

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// shared is what the Conns of a Group have in common, made by the first
// Listen and torn down by the last Close. Its netlink sockets are opened
// by that first Listen, so they stay in its network namespace.
type shared struct {
	iface      string
	laddr      netip.AddrPort
	link       linkInfo
	nl         *netlink.Handle
	neighbours *neighbours
	guard      guard
	guardKind  Guard

	fanoutID   uint16
	fanoutMode int  // type and flags, the same for every member
	hasFanout  bool // fanoutID is a live group
}

type linkInfo struct {
	index int
	mac   [6]byte
	mtu   int
}

// join adds a member to g, setting up its shared state if it is the first.
// g.mu is held.
func (g *Group) join(iface string, laddr netip.AddrPort, kind Guard) (*shared, error) {
	if g.members > 0 {
		s := g.shared
		if s.iface != iface || s.laddr != laddr {
			return nil, fmt.Errorf("group is on %s %v, not %s %v", s.iface, s.laddr, iface, laddr)
		}
		g.members++
		return s, nil
	}
	s, err := newShared(iface, laddr, kind)
	if err != nil {
		return nil, err
	}
	g.shared, g.members = s, 1
	return s, nil
}

// leave removes a member from g, tearing the shared state down after the
// last. g.mu is held.
func (g *Group) leave() error {
	if g.members--; g.members > 0 {
		return nil
	}
	s := g.shared
	g.shared = nil
	return s.close()
}

func newShared(iface string, laddr netip.AddrPort, kind Guard) (_ *shared, err error) {
	s := &shared{iface: iface, laddr: laddr}
	if s.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	l, err := s.nl.LinkByName(iface)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", iface, err)
	}
	a := l.Attrs()
	if a.EncapType != "ether" || len(a.HardwareAddr) != 6 {
		return nil, fmt.Errorf("interface %s is %s, not Ethernet: %w", iface, a.EncapType, ErrNotSupported)
	}
	s.link = linkInfo{index: a.Index, mtu: a.MTU, mac: [6]byte(a.HardwareAddr)}
	if s.guard, s.guardKind, err = installGuard(s.nl, s.link.index, laddr, kind); err != nil {
		return nil, err
	}
	if s.neighbours, err = newNeighbours(s.nl, s.link.index); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *shared) close() error {
	var errs []error
	if s.neighbours != nil {
		s.neighbours.stop()
	}
	if s.guard != nil {
		errs = append(errs, s.guard.remove())
	}
	s.nl.Close()
	return errors.Join(errs...)
}

// joinFanout puts the socket fd into the group's PACKET_FANOUT group,
// which the first socket creates with an id the kernel picks. Flows are
// spread by hash, so a flow stays with one socket and in order. Where the
// kernel can, outgoing frames are kept out of the group; elsewhere the
// filter rejects them, at a small cost.
func (s *shared) joinFanout(fd int) error {
	if s.hasFanout {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, int(s.fanoutID)|s.fanoutMode<<16); err != nil {
			return fmt.Errorf("PACKET_FANOUT join group %d: %w", s.fanoutID, err)
		}
		return nil
	}
	mode := unix.PACKET_FANOUT_HASH | unix.PACKET_FANOUT_FLAG_IGNORE_OUTGOING
	err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, (mode|unix.PACKET_FANOUT_FLAG_UNIQUEID)<<16)
	if errors.Is(err, unix.EINVAL) {
		mode = unix.PACKET_FANOUT_HASH // a kernel without IGNORE_OUTGOING
		err = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, (mode|unix.PACKET_FANOUT_FLAG_UNIQUEID)<<16)
	}
	if err != nil {
		return fmt.Errorf("PACKET_FANOUT new group: %w", err)
	}
	v, err := unix.GetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT)
	if err != nil {
		return fmt.Errorf("PACKET_FANOUT group id: %w", err)
	}
	s.fanoutID, s.fanoutMode, s.hasFanout = uint16(v), mode, true
	return nil
}
