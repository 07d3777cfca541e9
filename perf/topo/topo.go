// Package topo builds emulated clusters out of network namespaces: hosts
// joined by an underlay switch, each with a docker0-like bridge and
// containers behind it, wired with iproute2 as the flannel docs would.
//
// The address plan follows DESIGN.md §5. The underlay is 198.18.0.0/24:
// host number i+1 (namespace <prefix>-h<i+1>) has 198.18.0.<i+1> on its eth0,
// whose peer h<i+1> is a port of bridge sw0 in <prefix>-sw, which has
// 198.18.0.254. Bridges and containers take overlay addresses in
// 100.96.0.0/16. No interface is ever created in the caller's namespace, and
// IPv6 is turned off everywhere so that the links carry only test traffic.
//
// Everything here needs root on Linux (see netns.Available).
package topo

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"strconv"
	"sync"

	"github.com/overlayd/overlayd/perf/netns"
)

// The address plan.
var (
	underlayNet = netip.MustParsePrefix("198.18.0.0/24")
	switchAddr  = netip.MustParseAddr("198.18.0.254")
	overlayNet  = netip.MustParsePrefix("100.96.0.0/16")
)

const (
	switchBridge = "sw0"
	hostIface    = "eth0"
	MaxHosts     = 8  // emulated hosts a topology takes at most
	ifNameMax    = 15 // IFNAMSIZ - 1
)

// Options describes a cluster.
type Options struct {
	// Prefix starts every namespace name; empty picks netns.Prefix("topo").
	Prefix string
	// Hosts is the number of hosts, 2 to 8.
	Hosts int
	// UnderlayMTU is the MTU of every underlay link; 0 means 1500.
	UnderlayMTU int
	// Shape is added delay, loss and a rate cap on every host's underlay
	// interface; the zero Shape is a plain veth.
	Shape Shape
}

// Cluster is a set of emulated hosts on one underlay switch.
type Cluster struct {
	Prefix     string     // every namespace's name starts with Prefix + "-"
	Switch     *netns.NS  // holds bridge sw0, the underlay switch
	Hosts      []*Host    // Hosts[i] has Index i
	SwitchAddr netip.Addr // sw0's address, 198.18.0.254

	mu   sync.Mutex
	made []*netns.NS // in creation order; Close deletes them in reverse
}

// Host is one emulated host.
type Host struct {
	NS         *netns.NS
	Index      int          // position in Cluster.Hosts
	Underlay   netip.Prefix // 198.18.0.<Index+1>/24, on Iface
	Iface      string       // the underlay interface inside NS, "eth0"
	Bridge     string       // the container bridge, once AddBridge has made it
	Containers []*Container // in the order AddContainer made them

	cluster *Cluster
	mu      sync.Mutex
	gw      netip.Prefix // Bridge's address
	next    netip.Addr   // the next container's address
}

// Container is a namespace attached to its host's bridge.
type Container struct {
	NS   *netns.NS
	Addr netip.Prefix // on eth0 inside NS; the default route goes via the bridge
	Host *Host
}

// Check reports what New would refuse in o (host count, MTU, shaping),
// without building anything.
func (o Options) Check() error {
	_, err := o.withDefaults()
	return err
}

func (o Options) withDefaults() (Options, error) {
	if o.Prefix == "" {
		o.Prefix = netns.Prefix("topo")
	}
	if o.UnderlayMTU == 0 {
		o.UnderlayMTU = 1500
	}
	switch {
	case o.Hosts < 2 || o.Hosts > MaxHosts:
		return o, fmt.Errorf("topo: %d hosts, want 2 to %d", o.Hosts, MaxHosts)
	case o.UnderlayMTU < 68 || o.UnderlayMTU > 65535:
		return o, fmt.Errorf("topo: underlay MTU %d out of range [68, 65535]", o.UnderlayMTU)
	}
	return o, o.Shape.validate()
}

// New builds a cluster: the switch namespace with bridge sw0 (198.18.0.254/24)
// and opts.Hosts host namespaces, each with lo up, net.ipv4.ip_forward=1, and
// eth0 (198.18.0.<i+1>/24) on a veth pair whose other end is a port of sw0,
// shaped by opts.Shape.
// Veths are created directly in their namespaces. On error, everything made
// so far is deleted again.
func New(ctx context.Context, opts Options) (_ *Cluster, err error) {
	opts, err = opts.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Prefix: opts.Prefix, SwitchAddr: switchAddr}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()

	mtu := strconv.Itoa(opts.UnderlayMTU)
	if c.Switch, err = c.newNS(ctx, c.Prefix+"-sw"); err != nil {
		return nil, err
	}
	sw := c.Switch
	if err := run(ctx, sw,
		cmd("link", "add", switchBridge, "mtu", mtu, "type", "bridge"),
		cmd("addr", "add", netip.PrefixFrom(switchAddr, underlayNet.Bits()).String(), "dev", switchBridge),
		cmd("link", "set", switchBridge, "up"),
	); err != nil {
		return nil, err
	}

	for i := range opts.Hosts {
		num := strconv.Itoa(i + 1)
		ns, err := c.newNS(ctx, c.Prefix+"-h"+num)
		if err != nil {
			return nil, err
		}
		h := &Host{
			NS:       ns,
			Index:    i,
			Underlay: netip.PrefixFrom(hostAddr(i), underlayNet.Bits()),
			Iface:    hostIface,
			cluster:  c,
		}
		port := "h" + num
		if err := run(ctx, ns,
			cmd("link", "add", hostIface, "mtu", mtu, "type", "veth", "peer", "name", port, "mtu", mtu, "netns", sw.Name),
			cmd("addr", "add", h.Underlay.String(), "dev", hostIface),
			cmd("link", "set", hostIface, "up"),
		); err != nil {
			return nil, err
		}
		if err := run(ctx, sw, cmd("link", "set", port, "master", switchBridge, "up")); err != nil {
			return nil, err
		}
		if err := ns.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
			return nil, err
		}
		if err := opts.Shape.apply(ctx, ns, hostIface, opts.UnderlayMTU); err != nil {
			return nil, err
		}
		c.Hosts = append(c.Hosts, h)
	}
	return c, nil
}

// hostAddr is host i's underlay address, 198.18.0.<i+1>.
func hostAddr(i int) netip.Addr {
	a := underlayNet.Addr().As4()
	a[3] = byte(i + 1)
	return netip.AddrFrom4(a)
}

// Close deletes every namespace the cluster made, containers first and the
// switch last, which also removes every interface in them. It reports all
// failures together; a namespace it could not delete is tried again by the
// next Close. Closing a closed cluster does nothing.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	var kept []*netns.NS
	for i := len(c.made) - 1; i >= 0; i-- {
		if err := c.made[i].Delete(); err != nil {
			errs = append(errs, err)
			kept = append([]*netns.NS{c.made[i]}, kept...)
		}
	}
	c.made = kept
	return errors.Join(errs...)
}

// newNS creates a namespace that Close will delete, with lo up and IPv6 off.
func (c *Cluster) newNS(ctx context.Context, name string) (*netns.NS, error) {
	ns, err := netns.New(name)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.made = append(c.made, ns)
	c.mu.Unlock()
	for _, key := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
		if err := ns.Sysctl(key, "1"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	if err := run(ctx, ns, cmd("link", "set", "lo", "up")); err != nil {
		return nil, err
	}
	return ns, nil
}

// AddBridge gives the host its container bridge, as docker does with docker0
// once the subnet file names the host's subnet: a Linux bridge called name,
// with address gw (e.g. 100.96.3.1/24, inside 100.96.0.0/16) and MTU mtu,
// up. Containers then get the addresses after gw's.
func (h *Host) AddBridge(name string, gw netip.Prefix, mtu int) error {
	switch {
	case name == "" || len(name) > ifNameMax:
		return fmt.Errorf("topo: bridge name %q: want 1 to %d bytes", name, ifNameMax)
	case !gw.IsValid() || !overlayNet.Contains(gw.Addr()) || gw.Bits() < overlayNet.Bits() || gw.Bits() > 30:
		return fmt.Errorf("topo: bridge address %v: want a /16 to /30 inside %v", gw, overlayNet)
	case mtu < 68 || mtu > 65535:
		return fmt.Errorf("topo: bridge MTU %d out of range [68, 65535]", mtu)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.Bridge != "" {
		return fmt.Errorf("topo: host %s already has bridge %s", h.NS.Name, h.Bridge)
	}
	// The MTU is set after creation on purpose: only an MTU set on a live
	// bridge sticks, instead of following its ports' smallest.
	if err := run(context.Background(), h.NS,
		cmd("link", "add", name, "type", "bridge"),
		cmd("link", "set", name, "mtu", strconv.Itoa(mtu)),
		cmd("addr", "add", gw.String(), "dev", name),
		cmd("link", "set", name, "up"),
	); err != nil {
		return err
	}
	h.Bridge, h.gw, h.next = name, gw, gw.Addr().Next()
	return nil
}

// AddContainer makes a container namespace, <prefix>-h<n>c<k>, attached to
// the host's bridge by a veth pair (veth<k> on the host, eth0 inside, both
// of MTU containerMTU). eth0 gets the next free address in the bridge's
// subnet and the default route goes via the bridge.
func (h *Host) AddContainer(containerMTU int) (_ *Container, err error) {
	if containerMTU < 68 || containerMTU > 65535 {
		return nil, fmt.Errorf("topo: container MTU %d out of range [68, 65535]", containerMTU)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.Bridge == "" {
		return nil, fmt.Errorf("topo: host %s has no bridge: call AddBridge first", h.NS.Name)
	}
	addr := h.next
	if !h.gw.Contains(addr) || !h.gw.Contains(addr.Next()) { // the last address is broadcast
		return nil, fmt.Errorf("topo: bridge %s on %s: no addresses left in %v", h.Bridge, h.NS.Name, h.gw.Masked())
	}

	k := strconv.Itoa(len(h.Containers) + 1)
	ctx := context.Background()
	ns, err := h.cluster.newNS(ctx, fmt.Sprintf("%s-h%dc%s", h.cluster.Prefix, h.Index+1, k))
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, ns.Delete()) // takes the veth pair with it
		}
	}()
	mtu, hostSide := strconv.Itoa(containerMTU), "veth"+k
	if err := run(ctx, h.NS,
		cmd("link", "add", hostSide, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "mtu", mtu, "netns", ns.Name),
		cmd("link", "set", hostSide, "master", h.Bridge, "up"),
	); err != nil {
		return nil, err
	}
	c := &Container{NS: ns, Addr: netip.PrefixFrom(addr, h.gw.Bits()), Host: h}
	if err := run(ctx, ns,
		cmd("addr", "add", c.Addr.String(), "dev", "eth0"),
		cmd("link", "set", "eth0", "up"),
		cmd("route", "add", "default", "via", h.gw.Addr().String()),
	); err != nil {
		return nil, err
	}
	h.next = addr.Next()
	h.Containers = append(h.Containers, c)
	return c, nil
}

func cmd(args ...string) []string { return args }

// run runs `ip -n ns <args>` for each command in turn, stopping at the first
// failure.
func run(ctx context.Context, ns *netns.NS, cmds ...[]string) error {
	for _, args := range cmds {
		if err := ns.IP(ctx, args...); err != nil {
			return fmt.Errorf("topo: %w", err)
		}
	}
	return nil
}
