package tun

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// dgramOffset is the headroom of the UDP tests' Writes, as the forwarder
// leaves it after taking off a flannel UDP encapsulation.
const dgramOffset = 16

// datagrams returns n datagrams from remote:port to dst, numbered as a
// connected Linux socket sends them (DF, IPv4 IDs counting up), each in a
// buffer that a super-packet can grow into. Datagram i carries i in its
// first bytes.
func datagrams(t testing.TB, port uint16, dst netip.AddrPort, n, size int) [][]byte {
	t.Helper()
	bufs := make([][]byte, n)
	for i := range bufs {
		payload := make([]byte, size)
		for j := range payload {
			payload[j] = byte(i + j)
		}
		binary.BigEndian.PutUint32(payload, uint32(i))
		ip := &layers.IPv4{
			Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, Flags: layers.IPv4DontFragment, Id: uint16(1000 + i),
			SrcIP: remote.AsSlice(), DstIP: dst.Addr().Unmap().AsSlice(),
		}
		udp := &layers.UDP{SrcPort: layers.UDPPort(port), DstPort: layers.UDPPort(dst.Port())}
		if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		pkt := serialize(t, ip, udp, gopacket.Payload(payload))
		bufs[i] = append(make([]byte, dgramOffset, dgramOffset+65535), pkt...)
	}
	return bufs
}

// receiveAll reads n datagrams of size bytes from c and checks that they
// are datagrams(…, n, size) in order. The deadline only keeps a lost
// datagram from hanging the test.
func receiveAll(t *testing.T, c *net.UDPConn, n, size int) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	for i := range n {
		m, err := c.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d of %d: %v", i, n, err)
		}
		got := buf[:m]
		if m != size || binary.BigEndian.Uint32(got) != uint32(i) {
			t.Fatalf("datagram %d: %d bytes, number %d", i, m, binary.BigEndian.Uint32(got))
		}
		for j := 4; j < m; j++ {
			if got[j] != byte(i+j) {
				t.Fatalf("datagram %d: byte %d differs", i, j)
			}
		}
	}
}

// forceRcvbuf gives c a receive buffer that holds a whole test batch,
// beyond net.core.rmem_max.
func forceRcvbuf(t testing.TB, c *net.UDPConn) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
}

// snmp returns the counters of one protocol line pair ("Udp", "Ip") of
// /proc/net/snmp in ns.
func (ns *netns) snmp(t testing.TB, proto string) map[string]int64 {
	t.Helper()
	var text []byte
	var err error
	// /proc/net follows the process's first thread, not the namespace's.
	ns.Do(func() { text, err = os.ReadFile("/proc/thread-self/net/snmp") })
	if err != nil {
		t.Fatal(err)
	}
	counters := make(map[string]int64)
	var names []string
	for s := bufio.NewScanner(bytes.NewReader(text)); s.Scan(); {
		fields := strings.Fields(s.Text())
		if len(fields) == 0 || fields[0] != proto+":" {
			continue
		}
		if names == nil {
			names = fields[1:]
			continue
		}
		for i, v := range fields[1:] {
			counters[names[i]], _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return counters
}

// dropCounters returns the kernel's counters, in ns, of packets it could
// not deliver or forward: UDP and IP errors (/proc/net/snmp) and the
// errors and drops of the interfaces links (ip -s link).
func (ns *netns) dropCounters(t testing.TB, links ...string) map[string]int64 {
	t.Helper()
	counters := make(map[string]int64)
	for proto, names := range map[string][]string{
		"Udp": {"InErrors", "InCsumErrors", "RcvbufErrors", "NoPorts", "MemErrors"},
		"Ip":  {"InHdrErrors", "InAddrErrors", "InDiscards", "OutDiscards", "FragFails", "ReasmFails"},
	} {
		c := ns.snmp(t, proto)
		for _, name := range names {
			counters[proto+" "+name] = c[name]
		}
	}
	for _, name := range links {
		var link netlink.Link
		var err error
		ns.Do(func() { link, err = netlink.LinkByName(name) })
		if err != nil {
			t.Fatal(err)
		}
		s := link.Attrs().Statistics
		if s == nil {
			t.Fatalf("%s: no statistics", name)
		}
		counters[name+" rx errors"], counters[name+" rx dropped"] = int64(s.RxErrors), int64(s.RxDropped)
		counters[name+" tx errors"], counters[name+" tx dropped"] = int64(s.TxErrors), int64(s.TxDropped)
	}
	return counters
}

// checkNoDrops fails if a drop counter of ns moved since before.
func checkNoDrops(t *testing.T, ns *netns, where string, before map[string]int64, links ...string) {
	t.Helper()
	for name, n := range ns.dropCounters(t, links...) {
		if n != before[name] {
			t.Errorf("%s: %s went from %d to %d", where, name, before[name], n)
		}
	}
}

// TestOffloadUDPWrite writes many small datagrams in one batch into a TUN
// with offloads: with USO, Write merges them into a few GSOUDPL4 packets,
// which the kernel cuts back into the very same datagrams for a local
// socket; without USO, every datagram is a write of its own.
func TestOffloadUDPWrite(t *testing.T) {
	t.Parallel()
	const n, size = 150, 64 // 64+64+22 datagrams with USO
	tests := []struct {
		name   string
		opts   []Option
		writes int // write(2) calls of the Write
	}{
		{"USO", nil, 3},
		{"USO verify", []Option{WithChecksumVerify()}, 3},
		{"no USO", []Option{withFaults(func(req uint, flags uint32) error {
			if req == unix.TUNSETOFFLOAD && flags&tunFUSO4 != 0 {
				return unix.EINVAL
			}
			return nil
		})}, n},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ns := newNetns(t)
			dev := ns.create(t, "ovl0", 1, append(tt.opts, WithOffloads())...)[0]
			ns.configure(t, "ovl0", testMTU)
			sock := ns.listenUDP(t, netip.AddrPortFrom(local, 0))
			forceRcvbuf(t, sock)
			dst := sock.LocalAddr().(*net.UDPAddr).AddrPort()

			if f, _ := features(t, dev); f.USO != (tt.writes < n) {
				t.Fatalf("features %+v", f)
			}
			before := ns.dropCounters(t, "ovl0")
			if m, err := dev.Write(datagrams(t, 4000, dst, n, size), dgramOffset); m != n || err != nil {
				t.Fatalf("Write = %d, %v; want %d", m, err, n)
			}
			receiveAll(t, sock, n, size)

			d := dev.(*nativeDevice)
			if len(d.toWrite) != tt.writes {
				t.Errorf("%d writes for %d datagrams, want %d", len(d.toWrite), n, tt.writes)
			}
			if tt.writes < n && (d.stats.coalesced.Load() != 3 || d.stats.merged.Load() != n) {
				t.Errorf("%d super-packets of %d datagrams, want 3 of %d",
					d.stats.coalesced.Load(), d.stats.merged.Load(), n)
			}
			checkNoDrops(t, ns, "host", before, "ovl0")
		})
	}
}

// TestOffloadUDPAllocs checks that a Write that merges datagrams
// allocates nothing.
func TestOffloadUDPAllocs(t *testing.T) {
	ns := newNetns(t)
	dev := ns.create(t, "ovl0", 1, WithOffloads())[0]
	if f, _ := features(t, dev); !f.USO {
		t.Skipf("the kernel lacks USO (Linux 6.2): %+v", f)
	}
	ns.configure(t, "ovl0", testMTU)
	sock := ns.listenUDP(t, netip.AddrPortFrom(local, 0)) // overflows: drops are fine here
	bufs := datagrams(t, 4000, sock.LocalAddr().(*net.UDPAddr).AddrPort(), 8, 64)
	orig := make([][]byte, len(bufs))
	for i := range bufs {
		orig[i] = bytes.Clone(bufs[i])
	}
	var err error
	allocs := testing.AllocsPerRun(200, func() {
		for i := range bufs { // Write rewrites and lengthens them
			bufs[i] = bufs[i][:len(orig[i])]
			copy(bufs[i], orig[i])
		}
		_, err = dev.Write(bufs, dgramOffset)
	})
	if err != nil {
		t.Fatal(err)
	}
	if allocs != 0 {
		t.Errorf("Write: %v allocations per call, want 0", allocs)
	}
	if d := dev.(*nativeDevice); len(d.toWrite) != 1 {
		t.Errorf("%d writes for 8 datagrams, want 1", len(d.toWrite))
	}
}

// TestOffloadUDPForward takes merged datagrams the way overlayd's do: from
// the TUN, routed by the host (IP forwarding) onto a bridge like cni0, and
// through a veth into a container's namespace, where a socket without
// UDP_GRO must get them one by one and intact.
func TestOffloadUDPForward(t *testing.T) {
	t.Parallel()
	const n, size = 200, 64
	host, ctr := newNetns(t), newNetns(t)
	dev := host.create(t, "ovl0", 1, WithOffloads())[0]
	if f, _ := features(t, dev); !f.USO {
		t.Skipf("the kernel lacks USO (Linux 6.2): %+v", f)
	}
	host.configure(t, "ovl0", testMTU)
	ctrAddr := netip.MustParseAddr("100.96.1.2")
	bridgeAddr := netip.MustParsePrefix("100.96.1.1/24")
	plugContainer(t, host, ctr, bridgeAddr, netip.PrefixFrom(ctrAddr, 24))

	var sock *net.UDPConn
	var err error
	ctr.Do(func() { sock, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ctrAddr, 5201))) })
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	forceRcvbuf(t, sock)
	waitForPath(t, dev, ctr, netip.AddrPortFrom(ctrAddr, 5202))

	links := []string{"ovl0", "br0", "veth0"}
	hostBefore, ctrBefore := host.dropCounters(t, links...), ctr.dropCounters(t, "eth0")
	fwdBefore, inBefore := host.snmp(t, "Ip")["ForwDatagrams"], ctr.snmp(t, "Udp")["InDatagrams"]
	if m, err := dev.Write(datagrams(t, 4000, netip.AddrPortFrom(ctrAddr, 5201), n, size), dgramOffset); m != n || err != nil {
		t.Fatalf("Write = %d, %v; want %d", m, err, n)
	}
	receiveAll(t, sock, n, size)

	d := dev.(*nativeDevice)
	if len(d.toWrite) != 4 || d.stats.merged.Load() != n {
		t.Errorf("%d writes carrying %d merged datagrams, want 4 carrying %d", len(d.toWrite), d.stats.merged.Load(), n)
	}
	checkNoDrops(t, host, "host", hostBefore, links...)
	checkNoDrops(t, ctr, "container", ctrBefore, "eth0")
	fwd := host.snmp(t, "Ip")["ForwDatagrams"] - fwdBefore
	in := ctr.snmp(t, "Udp")["InDatagrams"] - inBefore
	t.Logf("host forwarded %d packets; the container's UDP took in %d datagrams", fwd, in)
	if fwd == 0 || in != n {
		t.Errorf("forwarded %d packets, %d datagrams in; want some and %d", fwd, in, n)
	}
}

// waitForPath sends probe datagrams through dev to a socket on dst in ctr
// until one arrives: bridge ports, carriers and the container's ARP entry
// settle in the kernel's own time after plugContainer.
func waitForPath(t *testing.T, dev Device, ctr *netns, dst netip.AddrPort) {
	t.Helper()
	var sock *net.UDPConn
	var err error
	ctr.Do(func() { sock, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(dst)) })
	if err != nil {
		t.Fatal(err)
	}
	// Open until the test ends, for the probes that arrive late.
	t.Cleanup(func() { sock.Close() })
	buf := make([]byte, 64)
	for try := range 300 {
		if _, err := dev.Write(datagrams(t, 4001, dst, 1, 8), dgramOffset); err != nil {
			t.Fatal(err)
		}
		sock.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := sock.Read(buf); err == nil {
			t.Logf("path ready after %d probes", try+1)
			return
		}
	}
	t.Fatal("no probe reached the container")
}

// plugContainer makes the host a router for a container the way docker
// or a CNI bridge does: IP forwarding, a bridge br0 holding bridgeAddr, and
// a veth pair from the bridge (veth0) into ctr (eth0, ctrAddr, default
// route via the bridge).
func plugContainer(t *testing.T, host, ctr *netns, bridgeAddr, ctrAddr netip.Prefix) {
	t.Helper()
	var ctrNS int
	var err error
	ctr.Do(func() { ctrNS, err = unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0) })
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ctrNS)

	host.Do(func() {
		if err = os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
			return
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
		if err = netlink.LinkAdd(br); err != nil {
			return
		}
		if err = netlink.AddrAdd(br, &netlink.Addr{IPNet: ipNet(bridgeAddr)}); err != nil {
			return
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth0", MasterIndex: br.Index}, PeerName: "eth0"}
		if err = netlink.LinkAdd(veth); err != nil {
			return
		}
		var peer netlink.Link
		if peer, err = netlink.LinkByName("eth0"); err != nil {
			return
		}
		if err = netlink.LinkSetNsFd(peer, ctrNS); err != nil {
			return
		}
		for _, l := range []netlink.Link{br, veth} {
			if err = netlink.LinkSetUp(l); err != nil {
				return
			}
		}
	})
	if err != nil {
		t.Fatalf("host side: %v", err)
	}
	ctr.Do(func() {
		var eth netlink.Link
		if eth, err = netlink.LinkByName("eth0"); err != nil {
			return
		}
		if err = netlink.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(ctrAddr)}); err != nil {
			return
		}
		if err = netlink.LinkSetUp(eth); err != nil {
			return
		}
		err = netlink.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: bridgeAddr.Addr().AsSlice()})
	})
	if err != nil {
		t.Fatalf("container side: %v", err)
	}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// BenchmarkWriteUDP writes batches of 128 datagrams of 64 bytes into a TUN
// with offloads and receives them on a local socket (recvmmsg), with and
// without USO: the kernel's cost per datagram, which bounds the packet rate
// of the receiving host.
func BenchmarkWriteUDP(b *testing.B) {
	for _, uso := range []bool{false, true} {
		b.Run(map[bool]string{false: "single", true: "merged"}[uso], func(b *testing.B) {
			const n, size = 128, 64
			opts := []Option{WithOffloads()}
			if !uso {
				opts = append(opts, withFaults(func(req uint, flags uint32) error {
					if req == unix.TUNSETOFFLOAD && flags&tunFUSO4 != 0 {
						return unix.EINVAL
					}
					return nil
				}))
			}
			ns := newNetns(b)
			dev := ns.create(b, "ovl0", 1, opts...)[0]
			ns.configure(b, "ovl0", testMTU)
			var sock *net.UDPConn
			var err error
			ns.Do(func() { sock, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0))) })
			if err != nil {
				b.Fatal(err)
			}
			defer sock.Close()
			forceRcvbuf(b, sock)
			dst := sock.LocalAddr().(*net.UDPAddr).AddrPort()
			pc := ipv4.NewPacketConn(sock)
			msgs := make([]ipv4.Message, n)
			for i := range msgs {
				msgs[i].Buffers = [][]byte{make([]byte, 2048)}
			}

			bufs := datagrams(b, 4000, dst, n, size)
			orig := make([][]byte, n)
			for i := range bufs {
				orig[i] = bytes.Clone(bufs[i])
			}
			// No ReportAllocs: x/net's ReadBatch allocates, Write does not
			// (TestOffloadUDPAllocs).
			b.SetBytes(n * size)
			for b.Loop() {
				for i := range bufs { // Write rewrites and lengthens them
					bufs[i] = bufs[i][:len(orig[i])]
					copy(bufs[i], orig[i])
				}
				if m, err := dev.Write(bufs, dgramOffset); m != n || err != nil {
					b.Fatalf("Write = %d, %v", m, err)
				}
				for got := 0; got < n; {
					m, err := pc.ReadBatch(msgs, 0)
					if err != nil {
						b.Fatal(err)
					}
					got += m
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/datagram")
			b.ReportMetric(float64(len(dev.(*nativeDevice).toWrite)), "writes/batch")
		})
	}
}
