package tun

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	ovdnetns "github.com/overlayd/overlayd/perf/netns"
	"github.com/overlayd/overlayd/perf/netns/netnstest"
)

// Addresses of the tests' network: the TUN holds local, the route for
// overlay points at it, and remote is a host behind it.
var (
	local   = netip.MustParseAddr("100.96.1.0")
	remote  = netip.MustParseAddr("100.96.2.5")
	overlay = netip.MustParsePrefix("100.96.0.0/16")
)

// netns is a network namespace of the test's own (netnstest.New). Do runs
// functions inside it, each on a locked OS thread of its own. Sockets and
// devices made there stay in the namespace and may then be used from any
// goroutine.
type netns struct {
	t  testing.TB
	ns *ovdnetns.NS
}

// newNetns skips the test unless it can make network namespaces and TUN
// interfaces, and otherwise gives it a namespace of its own that is
// deleted when the test ends, after it has closed what it opened there.
func newNetns(t testing.TB) *netns {
	t.Helper()
	if _, err := os.Stat(tunPath); err != nil {
		t.Skipf("needs %s: %v", tunPath, err)
	}
	return &netns{t: t, ns: netnstest.New(t, "tun")}
}

func (ns *netns) Do(f func()) {
	if err := ns.ns.Do(func() error { f(); return nil }); err != nil {
		ns.t.Fatal(err)
	}
}

// create opens the TUN interface name with the given queues in ns and
// closes its queues when the test ends.
func (ns *netns) create(t testing.TB, name string, queues int, opts ...Option) []Device {
	t.Helper()
	var devs []Device
	var err error
	ns.Do(func() { devs, err = Create(name, queues, opts...) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, d := range devs {
			d.Close()
		}
	})
	return devs
}

// configure gives the interface name the local address and the overlay
// route, sets its MTU and brings it up, as the engine does.
func (ns *netns) configure(t testing.TB, name string, mtu int) {
	t.Helper()
	var err error
	ns.Do(func() { err = configure(name, mtu) })
	if err != nil {
		t.Fatalf("configure %s: %v", name, err)
	}
}

func configure(name string, mtu int) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: local.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("add address: %w", err)
	}
	if err := netlink.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("set MTU: %w", err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	route := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Scope:     netlink.SCOPE_LINK,
		Dst:       &net.IPNet{IP: overlay.Addr().AsSlice(), Mask: net.CIDRMask(overlay.Bits(), 32)},
	}
	if err := netlink.RouteAdd(route); err != nil {
		return fmt.Errorf("add route: %w", err)
	}
	return nil
}

// listenUDP opens a UDP socket on addr in ns.
func (ns *netns) listenUDP(t *testing.T, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	var err error
	ns.Do(func() { c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr)) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialUDP opens a UDP socket in ns connected to addr, as a raw descriptor
// so that writing to it allocates nothing.
func (ns *netns) dialUDP(t *testing.T, addr netip.AddrPort) int {
	t.Helper()
	var fd int
	var err error
	ns.Do(func() {
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return
		}
		err = unix.Connect(fd, &unix.SockaddrInet4{Addr: addr.Addr().As4(), Port: int(addr.Port())})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// udpPacket builds an IPv4/UDP packet from remote to dst, with checksums.
func udpPacket(t testing.TB, srcPort uint16, dst netip.AddrPort, payload []byte) []byte {
	t.Helper()
	ip := &layers.IPv4{
		Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: remote.AsSlice(), DstIP: dst.Addr().AsSlice(),
	}
	udp := &layers.UDP{SrcPort: layers.UDPPort(srcPort), DstPort: layers.UDPPort(dst.Port())}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t, ip, udp, gopacket.Payload(payload))
}

// echoRequest builds an ICMP echo request from remote to local.
func echoRequest(t testing.TB, id, seq uint16, payload []byte) []byte {
	t.Helper()
	ip := &layers.IPv4{
		Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4,
		SrcIP: remote.AsSlice(), DstIP: local.AsSlice(),
	}
	icmp := &layers.ICMPv4{
		TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0),
		Id:       id, Seq: seq,
	}
	return serialize(t, ip, icmp, gopacket.Payload(payload))
}

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// withHeadroom returns pkt behind offset bytes of junk headroom, which
// Write must skip.
func withHeadroom(pkt []byte, offset int) []byte {
	return append(bytes.Repeat([]byte{0xee}, offset), pkt...)
}

// udpPayload returns the payload of pkt if it is IPv4/UDP to dst.
func udpPayload(pkt []byte, dst netip.AddrPort) ([]byte, bool) {
	p := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.NoCopy)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	udp, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if ip == nil || udp == nil || p.ErrorLayer() != nil {
		return nil, false
	}
	if a, _ := netip.AddrFromSlice(ip.DstIP); a != dst.Addr() || uint16(udp.DstPort) != dst.Port() {
		return nil, false
	}
	return udp.Payload, true
}

// echoReply returns the id and sequence of pkt if it is an ICMP echo reply
// from local to remote.
func echoReply(pkt []byte) (id, seq uint16, ok bool) {
	p := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.NoCopy)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	icmp, _ := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if ip == nil || icmp == nil || icmp.TypeCode.Type() != layers.ICMPv4TypeEchoReply {
		return 0, 0, false
	}
	if a, _ := netip.AddrFromSlice(ip.DstIP); a != remote {
		return 0, 0, false
	}
	return icmp.Id, icmp.Seq, true
}

// newBatch returns n buffers of size bytes each, and n sizes.
func newBatch(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	return bufs, make([]int, n)
}

// waitParked waits until a goroutine whose stack mentions fn is asleep in
// a system call (the native Device's poll) or in the netpoller (the water
// Device), so that a test can act on a Read that
// is most likely blocked. It has no deadline of its own: the test's is enough.
func waitParked(fn string) {
	buf := make([]byte, 1<<20)
	for {
		stacks := string(buf[:runtime.Stack(buf, true)])
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, fn) && (strings.Contains(g, "[syscall") || strings.Contains(g, "waitRead")) {
				return
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// readQueues reads each queue of devs in a goroutine of its own and hands
// every packet to handle with the queue's index, until the queue is
// closed; any other read error fails the test. stop closes the queues and
// waits for the readers.
func readQueues(t *testing.T, devs []Device, handle func(queue int, pkt []byte)) (stop func()) {
	var wg sync.WaitGroup
	for q, d := range devs {
		wg.Go(func() {
			bufs, sizes := newBatch(d.BatchSize(), testMTU)
			for {
				n, err := d.Read(bufs, sizes, 0)
				for i := range n {
					handle(q, bufs[i][:sizes[i]])
				}
				if errors.Is(err, os.ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	return func() {
		for _, d := range devs {
			d.Close()
		}
		wg.Wait()
	}
}
