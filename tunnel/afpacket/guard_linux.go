package afpacket

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// guard keeps the kernel from answering the datagrams the ring takes.
type guard interface {
	remove() error
}

// installGuard installs the guard of the given kind (GuardAuto: tc, or
// failing that a socket) and reports which.
func installGuard(h *netlink.Handle, ifindex int, laddr netip.AddrPort, kind Guard) (guard, Guard, error) {
	if kind != GuardSocket {
		g, err := installTC(h, ifindex, laddr)
		if err == nil {
			return g, GuardTC, nil
		}
		if kind == GuardTC {
			return nil, kind, fmt.Errorf("tc guard: %w", err)
		}
		g2, err2 := installSocket(laddr)
		if err2 != nil {
			return nil, kind, fmt.Errorf("no guard: tc: %w; socket: %w", err, err2)
		}
		return g2, GuardSocket, nil
	}
	g, err := installSocket(laddr)
	if err != nil {
		return nil, kind, fmt.Errorf("socket guard: %w", err)
	}
	return g, GuardSocket, nil
}

// The tc guard: a cls_bpf filter running the classic program of
// filterProgram (guardMatch) in direct-action mode on the interface's
// ingress hook. It runs once AF_PACKET's taps have copied a frame and
// before IP sees it, and lets everything else through untouched
// (TC_ACT_UNSPEC: later filters still run).
//
// The filter is identified by a fixed priority and a handle derived from
// laddr, so that the next overlayd replaces one left behind by a crash and
// two overlayds on one interface (different ports) do not collide.
const (
	guardPriority = 256                        // before the numbers tc picks itself (49152 down)
	tcParent      = netlink.HANDLE_MIN_INGRESS // ingress hook of clsact or ingress
)

type tcGuard struct {
	sock        *nl.SocketHandle // in the namespace the guard was made in
	h           *netlink.Handle
	ifindex     int
	handle      uint32
	addedQdisc  bool // clsact is ours: removed with the filter if then empty
	clsactQdisc netlink.Qdisc
}

func guardHandle(laddr netip.AddrPort) uint32 {
	f := fnv.New32a()
	a := laddr.Addr().As4()
	f.Write(a[:])
	f.Write([]byte{byte(laddr.Port() >> 8), byte(laddr.Port())})
	return f.Sum32() | 1 // 0 would ask the kernel to pick one
}

func installTC(h *netlink.Handle, ifindex int, laddr netip.AddrPort) (_ *tcGuard, err error) {
	s, err := nl.Subscribe(unix.NETLINK_ROUTE) // no groups: a request socket of our own
	if err != nil {
		return nil, err
	}
	g := &tcGuard{sock: &nl.SocketHandle{Socket: s}, h: h, ifindex: ifindex, handle: guardHandle(laddr)}
	defer func() {
		if err != nil {
			g.sock.Close()
		}
	}()
	if err := g.ensureQdisc(); err != nil {
		return nil, err
	}
	prog, err := filterProgram(laddr, guardMatch)
	if err != nil {
		return nil, err
	}
	req := g.request(unix.RTM_NEWTFILTER, unix.NLM_F_CREATE|unix.NLM_F_REPLACE)
	opts := nl.NewRtAttr(nl.TCA_OPTIONS, nil)
	opts.AddRtAttr(nl.TCA_BPF_OPS_LEN, nl.Uint16Attr(uint16(len(prog))))
	opts.AddRtAttr(nl.TCA_BPF_OPS, rawProgram(prog))
	opts.AddRtAttr(nl.TCA_BPF_FLAGS, nl.Uint32Attr(nl.TCA_BPF_FLAG_ACT_DIRECT))
	req.AddData(opts)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		g.removeQdisc()
		return nil, fmt.Errorf("add cls_bpf filter: %w", err)
	}
	return g, nil
}

// ensureQdisc finds the interface's clsact or ingress qdisc, or adds a
// clsact qdisc.
func (g *tcGuard) ensureQdisc() error {
	link, err := g.h.LinkByIndex(g.ifindex)
	if err != nil {
		return err
	}
	qdiscs, err := g.h.QdiscList(link)
	if err != nil {
		return fmt.Errorf("list qdiscs: %w", err)
	}
	for _, q := range qdiscs {
		if t := q.Type(); t == "clsact" || t == "ingress" {
			return nil
		}
	}
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: g.ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := g.h.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	g.addedQdisc, g.clsactQdisc = true, q
	return nil
}

// request starts a filter request for the guard's filter.
func (g *tcGuard) request(typ, flags int) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(typ, flags|unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: g.sock}
	req.AddData(&nl.TcMsg{
		Family:  unix.AF_UNSPEC,
		Ifindex: int32(g.ifindex),
		Handle:  g.handle,
		Parent:  tcParent,
		Info:    netlink.MakeHandle(guardPriority, htons(unix.ETH_P_IP)),
	})
	req.AddData(nl.NewRtAttr(nl.TCA_KIND, nl.ZeroTerminated("bpf")))
	return req
}

func (g *tcGuard) remove() error {
	defer g.sock.Close()
	_, err := g.request(unix.RTM_DELTFILTER, 0).Execute(unix.NETLINK_ROUTE, 0)
	if errors.Is(err, unix.ENOENT) {
		err = nil // removed by someone else
	}
	if err != nil {
		err = fmt.Errorf("remove tc guard: %w", err)
	}
	g.removeQdisc()
	return err
}

// removeQdisc deletes the clsact qdisc the guard added, unless someone
// has put filters of their own on it since.
func (g *tcGuard) removeQdisc() {
	if !g.addedQdisc {
		return
	}
	link, err := g.h.LinkByIndex(g.ifindex)
	if err != nil {
		return
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		if fs, err := g.h.FilterList(link, parent); err != nil || len(fs) > 0 {
			return
		}
	}
	g.h.QdiscDel(g.clsactQdisc)
}

// rawProgram encodes a classic BPF program as struct sock_filter array.
func rawProgram(prog []bpf.RawInstruction) []byte {
	b := make([]byte, 0, 8*len(prog))
	for _, ins := range prog {
		b = binary.NativeEndian.AppendUint16(b, ins.Op)
		b = append(b, ins.Jt, ins.Jf)
		b = binary.NativeEndian.AppendUint32(b, ins.K)
	}
	return b
}

// RemoveStaleGuard removes the tc filter an overlayd on iface for laddr
// left behind when it crashed, if there is one: it would drop laddr's
// datagrams before a UDP socket could receive them. Call it before using
// laddr with a UDP socket; Listen needs no help, it replaces the filter.
func RemoveStaleGuard(iface string, laddr netip.AddrPort) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer h.Close()
	link, err := h.LinkByName(iface)
	if err != nil {
		return err
	}
	laddr = netip.AddrPortFrom(laddr.Addr().Unmap(), laddr.Port())
	if !laddr.Addr().Is4() {
		return nil
	}
	s, err := nl.Subscribe(unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	g := &tcGuard{sock: &nl.SocketHandle{Socket: s}, h: h, ifindex: link.Attrs().Index, handle: guardHandle(laddr)}
	err = g.remove()
	if errors.Is(err, unix.EINVAL) {
		return nil // no ingress qdisc: no filter either
	}
	return err
}

// The socket guard: a UDP socket bound to laddr whose filter drops
// everything, so the kernel delivers the datagrams to it (no ICMP) and
// frees them at once, without queueing. UDP_GRO keeps the kernel from
// segmenting coalesced datagrams just to drop the pieces.
type socketGuard struct{ pc net.PacketConn }

func installSocket(laddr netip.AddrPort) (*socketGuard, error) {
	prog, err := bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})
	if err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		cerr := rc.Control(func(fd uintptr) {
			if err = attachFilter(int(fd), prog); err != nil {
				return
			}
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 0) // the kernel's minimum
			unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1)  // best effort
		})
		return errors.Join(cerr, err)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", laddr.String())
	if err != nil {
		return nil, err
	}
	return &socketGuard{pc: pc}, nil
}

func (g *socketGuard) remove() error { return g.pc.Close() }
