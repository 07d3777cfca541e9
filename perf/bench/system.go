package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/overlayd/overlayd/perf/topo"
	"github.com/overlayd/overlayd/perf/traffic"
	"github.com/overlayd/overlayd/subnet/backoff"
)

// A System carries container traffic between emulated hosts: a kernel
// baseline or one of overlayd's modes. Adding one to the bench is adding it
// to [systems].
type System interface {
	Name() string
	// Setup builds a fresh two-host topology (DESIGN.md §5) running the
	// system, with one container per host, and checks that the client's
	// container reaches the server's. On error it leaves nothing behind.
	Setup(ctx context.Context, env Env) (Testbed, error)
}

// Env is what a System gets to build a testbed with.
type Env struct {
	Prefix   string // unique prefix for every namespace (netns.Prefix)
	WorkDir  string // an existing directory for logs and state
	Overlayd string // the overlayd binary (also etcd's, for flanneld)
	Flanneld string // the flanneld binary, for flanneld systems; may be empty
	// The underlay links: their MTU (0: 1500) and shape.
	UnderlayMTU int
	Shape       topo.Shape
	Logf        func(format string, args ...any)
}

func (e Env) underlayMTU() int {
	if e.UnderlayMTU == 0 {
		return 1500
	}
	return e.UnderlayMTU
}

// A Testbed is a System set up and running.
type Testbed interface {
	// Endpoints are where iperf3 runs: the client's container on host 1
	// and the server's on host 2.
	Endpoints() (client, server *topo.Container)
	// ContainerMTU is the MTU of the containers' interfaces, which the
	// sweeps' largest messages fill.
	ContainerMTU() int
	// OverlaydPIDs are the overlayd processes whose own CPU time is
	// measured; none for kernel systems.
	OverlaydPIDs() []int
	// ForwarderPIDs are the processes that forward the packets in
	// userspace (overlayd, or flanneld with its udp backend; flanneld's
	// vxlan backend only programs the kernel), whose threads' scheduling
	// is counted in the latency tests; none for kernel systems.
	ForwarderPIDs() []int
	// Teardown stops every process and deletes every namespace the
	// testbed made.
	Teardown() error
}

// systems is every system the bench knows, in table order.
var systems = []System{
	kernelSystem{name: "host-gw", route: hostGWRoutes},
	kernelSystem{name: Baseline, overhead: vxlanOverhead, route: vxlanRoutes},
	overlaydSystem{name: "overlayd-udp", config: udpConfig},
	// overlayd-udp sleeping at once on an empty queue: what --busy-poll
	// (on by default) buys, and costs.
	overlaydSystem{name: "overlayd-udp-nobusy", config: udpConfig, args: []string{"--busy-poll", "0"}},
	overlaydSystem{name: "overlayd-vxlan", config: vxlanConfig},
	// overlayd-udp with each packet forwarded on the CPU that sent it.
	overlaydSystem{name: "overlayd-udp-cpu", config: udpConfig, args: []string{"--steering", "cpu"}},
	// overlayd-udp keeping idle CPUs polling while packets flow: what
	// --idle-poll buys, and costs.
	overlaydSystem{name: "overlayd-udp-poll", config: udpConfig, args: []string{"--idle-poll", "1s"}},
	// The same two over AF_PACKET rings instead of UDP sockets.
	overlaydSystem{name: "overlayd-udp-afpacket", config: `{"Network":"100.96.0.0/16","SubnetLen":24,"Backend":{"Type":"udp","Port":8285}}`, args: afpacketArgs},
	overlaydSystem{name: "overlayd-vxlan-afpacket", config: vxlanConfig, args: afpacketArgs},
	// The kernel forwards these two; overlayd only programs it, as flanneld
	// would: they should match host-gw and kernel-vxlan.
	overlaydSystem{name: "overlayd-host-gw", config: `{"Network":"100.96.0.0/16","SubnetLen":24,"Backend":{"Type":"host-gw"}}`, kernel: true},
	overlaydSystem{name: "overlayd-kernel-vxlan", config: vxlanConfig, args: []string{"--vxlan-dataplane", "kernel"}, kernel: true},
	// flanneld itself, from a binary the user has (--flanneld).
	flanneldSystem{name: "flanneld-udp", config: udpConfig, forwards: true},
	flanneldSystem{name: "flanneld-vxlan", config: vxlanConfig},
}

const udpConfig = `{"Network":"100.96.0.0/16","SubnetLen":24,"Backend":{"Type":"udp","Port":8285}}`

const vxlanConfig = `{"Network":"100.96.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1,"Port":8472}}`

var afpacketArgs = []string{"--underlay", "afpacket"}

// DefaultSystems is what `make bench` measures.
var DefaultSystems = []string{"host-gw", Baseline, "overlayd-udp", "overlayd-udp-nobusy", "overlayd-udp-poll", "overlayd-vxlan", "overlayd-host-gw"}

// FlanneldSystems are the rows --flanneld adds.
var FlanneldSystems = []string{"flanneld-udp", "flanneld-vxlan"}

// needsOverlayd reports whether a system runs the overlayd binary (for
// flanneld's, as its etcd).
func needsOverlayd(s System) bool {
	switch s.(type) {
	case overlaydSystem, flanneldSystem:
		return true
	}
	return false
}

func isFlanneld(s System) bool {
	_, ok := s.(flanneldSystem)
	return ok
}

// SystemNames lists every system the bench knows.
func SystemNames() []string {
	var names []string
	for _, s := range systems {
		names = append(names, s.Name())
	}
	return names
}

// LookupSystem finds a system by name.
func LookupSystem(name string) (System, error) {
	i := slices.IndexFunc(systems, func(s System) bool { return s.Name() == name })
	if i < 0 {
		return nil, fmt.Errorf("unknown system %q: want one of %s", name, strings.Join(SystemNames(), ", "))
	}
	return systems[i], nil
}

// The kernel systems' address plan: host i (from 0) has subnet
// 100.96.<i+1>.0/24, its bridge 100.96.<i+1>.1.
func hostSubnet(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 96, byte(i + 1), 0}), 24)
}

// kernelSystem is a baseline that the Linux kernel forwards alone: a bridge
// and container per host, and host routing programmed by route.
type kernelSystem struct {
	name string
	// overhead is the encapsulation's: the bridge's and the containers'
	// MTU (as docker --mtu) is the underlay's less this.
	overhead int
	// route programs host h so that its containers reach every peer's
	// over devices of MTU mtu.
	route func(ctx context.Context, h *topo.Host, peers []*topo.Host, mtu int) error
}

func (s kernelSystem) Name() string { return s.name }

func (s kernelSystem) Setup(ctx context.Context, env Env) (_ Testbed, err error) {
	c, err := topo.New(ctx, topo.Options{Prefix: env.Prefix, Hosts: 2, UnderlayMTU: env.underlayMTU(), Shape: env.Shape})
	if err != nil {
		return nil, err
	}
	mtu := env.underlayMTU() - s.overhead
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	for i, h := range c.Hosts {
		sub := hostSubnet(i)
		gw := netip.PrefixFrom(sub.Addr().Next(), sub.Bits())
		if err := h.AddBridge("docker0", gw, mtu); err != nil {
			return nil, err
		}
		if _, err := h.AddContainer(mtu); err != nil {
			return nil, err
		}
	}
	for _, h := range c.Hosts {
		peers := slices.DeleteFunc(slices.Clone(c.Hosts), func(p *topo.Host) bool { return p == h })
		if err := s.route(ctx, h, peers, mtu); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	tb := &kernelTestbed{topo: c, client: c.Hosts[0].Containers[0], server: c.Hosts[1].Containers[0], mtu: mtu}
	if err := checkPath(ctx, tb.client, tb.server, mtu); err != nil {
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	return tb, nil
}

type kernelTestbed struct {
	topo           *topo.Cluster
	client, server *topo.Container
	mtu            int
}

func (t *kernelTestbed) ContainerMTU() int { return t.mtu }

func (t *kernelTestbed) Endpoints() (client, server *topo.Container) { return t.client, t.server }
func (t *kernelTestbed) OverlaydPIDs() []int                         { return nil }
func (t *kernelTestbed) ForwarderPIDs() []int                        { return nil }
func (t *kernelTestbed) Teardown() error                             { return t.topo.Close() }

// hostGWRoutes is flannel's host-gw backend: a route to each peer's subnet
// via its underlay address.
func hostGWRoutes(ctx context.Context, h *topo.Host, peers []*topo.Host, _ int) error {
	for _, p := range peers {
		if err := h.NS.IP(ctx, "route", "add", hostSubnet(p.Index).String(), "via", p.Underlay.Addr().String()); err != nil {
			return err
		}
	}
	return nil
}

// The kernel VXLAN device as flanneld makes it (FLANNEL.md §6).
const (
	vxlanDevice   = "flannel.1"
	vxlanOverhead = 50 // outer IPv4, UDP, VXLAN and Ethernet headers
)

// vtepMAC is host i's flannel.1 address. flanneld picks a random one; a
// fixed, locally administered one makes the testbed reproducible.
func vtepMAC(i int) string { return fmt.Sprintf("02:00:00:00:00:%02x", i+1) }

// vxlanRoutes programs host h as flanneld's vxlan backend does: flannel.1
// (VNI 1, port 8472, no learning, MTU mtu: 1450 on a 1500 underlay) with the subnet's network
// address, and per peer one route, one permanent neighbour and one fdb
// entry, as in USERS.md §C.4.
func vxlanRoutes(ctx context.Context, h *topo.Host, peers []*topo.Host, mtu int) error {
	local := h.Underlay.Addr().String()
	self := hostSubnet(h.Index).Addr()
	for _, args := range [][]string{
		{"link", "add", vxlanDevice, "type", "vxlan", "id", "1", "dstport", "8472", "local", local, "dev", h.Iface, "nolearning"},
		{"link", "set", vxlanDevice, "address", vtepMAC(h.Index), "mtu", fmt.Sprint(mtu), "up"},
		{"addr", "add", netip.PrefixFrom(self, 32).String(), "dev", vxlanDevice},
	} {
		if err := h.NS.IP(ctx, args...); err != nil {
			return err
		}
	}
	for _, p := range peers {
		sub := hostSubnet(p.Index)
		gw, mac := sub.Addr().String(), vtepMAC(p.Index)
		if err := h.NS.IP(ctx, "route", "add", sub.String(), "via", gw, "dev", vxlanDevice, "onlink"); err != nil {
			return err
		}
		if err := h.NS.IP(ctx, "neigh", "add", gw, "lladdr", mac, "dev", vxlanDevice, "nud", "permanent"); err != nil {
			return err
		}
		if _, err := h.NS.Exec(ctx, "bridge", "fdb", "add", mac, "dev", vxlanDevice, "dst", p.Underlay.Addr().String(), "self", "permanent"); err != nil {
			return err
		}
	}
	return nil
}

// checkPath makes sure the client's container reaches the server's before
// anything is measured, first with a small ping (retried while the path
// settles, e.g. overlayd learning its peers), then with one as large as the
// MTU and Don't Fragment: a wrong MTU would otherwise show up only as a
// mysteriously slow TCP test.
func checkPath(ctx context.Context, client, server *topo.Container, mtu int) error {
	dst := server.Addr.Addr()
	var last traffic.PingResult
	for attempt := 0; ; attempt++ {
		res, err := traffic.Ping(ctx, client.NS, dst, traffic.MinPingSize+56, false, time.Second)
		if err != nil {
			return fmt.Errorf("check path to %s: %w", dst, err)
		}
		if res.Reply {
			break
		}
		last = res
		if attempt == 9 {
			return fmt.Errorf("check path: %s does not answer ping: %s", dst, last)
		}
		if err := backoff.Sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	res, err := traffic.Ping(ctx, client.NS, dst, mtu, true, 2*time.Second)
	if err != nil {
		return fmt.Errorf("check path MTU to %s: %w", dst, err)
	}
	if !res.Reply {
		return fmt.Errorf("check path: a %d-byte ping to %s with Don't Fragment: %s", mtu, dst, res)
	}
	return nil
}
