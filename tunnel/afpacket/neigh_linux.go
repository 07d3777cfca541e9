package afpacket

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// neighbours maps underlay destinations to the MAC address of their next
// hop, as the kernel's routing and neighbour tables have it. WriteBatch
// reads an immutable snapshot without locks; one goroutine keeps it
// current:
//   - a destination seen for the first time is routed (RTM_GETROUTE) and
//     its next hop looked up; if the kernel has no usable entry it is asked
//     to resolve one (NTF_USE, as if it had a packet to send), and the
//     answer arrives through the neighbour subscription. The first
//     WriteBatch to see the destination waits briefly for it (an ARP
//     exchange takes well under a millisecond on a LAN); later ones drop
//     and count the datagrams while it is pending.
//   - neighbour events (a new MAC, an entry failed or deleted) update every
//     destination behind that next hop at once.
//   - every refreshTicks the routes are looked up again and the kernel is
//     asked to confirm each next hop in use. Frames sent through AF_PACKET
//     never confirm a neighbour the way the kernel's own traffic does, so
//     without this a neighbour that changed its MAC address silently would
//     never be noticed; with it the entry goes stale, is probed, and fails
//     or changes, which the subscription reports.
type neighbours struct {
	nl      *netlink.Handle
	ifindex int
	table   atomic.Pointer[hopTable]
	misses  chan netip.Addr // from WriteBatch; never blocks it
	done    chan struct{}
	wg      sync.WaitGroup

	mu      sync.Mutex
	changed chan struct{} // closed and replaced by every publish

	// Owned by the resolver goroutine.
	nextHop map[netip.Addr]netip.Addr // destination → next hop; invalid if unroutable
	macs    map[netip.Addr]hop        // next hop → what the kernel says
}

type hopTable map[netip.Addr]hop

// hop is a destination's next hop as WriteBatch sees it.
type hop struct {
	mac   [6]byte
	state hopState
}

type hopState uint8

const (
	hopPending    hopState = iota // being resolved
	hopResolved                   // mac is valid
	hopUnroutable                 // not reachable out of this interface
)

const (
	tick         = time.Second // retry of pending resolutions
	refreshTicks = 30          // routes and confirmations, in ticks
	// firstWait bounds how long WriteBatch waits for a destination it
	// sees for the first time, once: a dead peer stalls a worker once.
	firstWait = 20 * time.Millisecond
)

func newNeighbours(nl *netlink.Handle, ifindex int) (*neighbours, error) {
	n := &neighbours{
		nl:      nl,
		ifindex: ifindex,
		misses:  make(chan netip.Addr, 64),
		done:    make(chan struct{}),
		nextHop: make(map[netip.Addr]netip.Addr),
		macs:    make(map[netip.Addr]hop),
		changed: make(chan struct{}),
	}
	n.table.Store(&hopTable{})
	// Subscribed here, on the caller's thread, so that the socket is in
	// the caller's network namespace.
	updates := make(chan netlink.NeighUpdate, 64)
	if err := netlink.NeighSubscribeWithOptions(updates, n.done, netlink.NeighSubscribeOptions{
		ErrorCallback: func(error) {}, // the periodic refresh covers a lost subscription
	}); err != nil {
		return nil, err
	}
	n.wg.Add(1)
	go n.run(updates)
	return n, nil
}

// lookup returns dst's next hop. It takes no lock and allocates nothing,
// except the first time it sees dst: then it asks the resolver and waits
// up to firstWait for the answer.
func (n *neighbours) lookup(dst netip.Addr) hop {
	if h, ok := (*n.table.Load())[dst]; ok {
		return h
	}
	return n.await(dst, firstWait)
}

// await asks the resolver about dst and waits until it knows more than
// that dst is pending, or timeout passes.
func (n *neighbours) await(dst netip.Addr, timeout time.Duration) hop {
	deadline := time.Now().Add(timeout)
	for {
		n.mu.Lock()
		changed := n.changed // taken first: a publish after the load below wakes us
		n.mu.Unlock()
		h, ok := (*n.table.Load())[dst]
		if ok && h.state != hopPending {
			return h
		}
		if !ok {
			select {
			case n.misses <- dst:
			default: // the resolver is busy; a later batch asks again
			}
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return hop{state: hopPending}
		}
		t := time.NewTimer(wait)
		select {
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

func (n *neighbours) stop() {
	close(n.done)
	n.wg.Wait()
}

func (n *neighbours) run(updates chan netlink.NeighUpdate) {
	defer n.wg.Done()
	t := time.NewTicker(tick)
	defer t.Stop()
	for ticks := 1; ; ticks++ {
		changed := false
		select {
		case <-n.done:
			return
		case dst := <-n.misses:
			if _, known := n.nextHop[dst]; !known {
				n.route(dst)
				n.readNeighbours()
				n.resolve(false)
				changed = true
			}
		case u, ok := <-updates:
			if !ok {
				updates = nil // subscription lost; ticks still refresh
				continue
			}
			changed = n.update(&u.Neigh, u.Type == unix.RTM_DELNEIGH)
		case <-t.C:
			full := ticks%refreshTicks == 0
			for dst, via := range n.nextHop {
				if full || !via.IsValid() {
					n.route(dst) // routes change; a missing one may appear
				}
			}
			if full || n.anyPending() {
				n.readNeighbours()
				n.resolve(full)
				changed = true
			}
		}
		if changed {
			n.publish()
		}
	}
}

// route looks up the next hop of dst.
func (n *neighbours) route(dst netip.Addr) {
	n.nextHop[dst] = netip.Addr{}
	routes, err := n.nl.RouteGet(net.IP(dst.AsSlice()))
	if err != nil || len(routes) == 0 {
		return
	}
	r := routes[0]
	if r.LinkIndex != n.ifindex || (r.Type != 0 && r.Type != unix.RTN_UNICAST) {
		return
	}
	via := dst
	if gw, ok := netip.AddrFromSlice(r.Gw); ok && gw.Unmap().IsValid() && !gw.IsUnspecified() {
		via = gw.Unmap()
	}
	n.nextHop[dst] = via
}

// readNeighbours refreshes the MACs of the interface's neighbours.
func (n *neighbours) readNeighbours() {
	list, err := n.nl.NeighList(n.ifindex, netlink.FAMILY_V4)
	if err != nil {
		return
	}
	for k, h := range n.macs {
		if h.state == hopResolved {
			n.macs[k] = hop{state: hopPending} // unless listed below
		}
	}
	for i := range list {
		n.update(&list[i], false)
	}
}

// update records what the kernel says of one neighbour, and reports
// whether it is a next hop of ours.
func (n *neighbours) update(nb *netlink.Neigh, deleted bool) bool {
	ip, ok := netip.AddrFromSlice(nb.IP)
	if !ok || nb.LinkIndex != n.ifindex {
		return false
	}
	ip = ip.Unmap()
	if !n.isNextHop(ip) {
		return false
	}
	const usable = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE |
		netlink.NUD_PERMANENT | netlink.NUD_NOARP
	if !deleted && nb.State&usable != 0 && len(nb.HardwareAddr) == 6 {
		n.macs[ip] = hop{mac: [6]byte(nb.HardwareAddr), state: hopResolved}
	} else {
		n.macs[ip] = hop{state: hopPending}
	}
	return true
}

func (n *neighbours) isNextHop(ip netip.Addr) bool {
	for _, via := range n.nextHop {
		if via == ip {
			return true
		}
	}
	return false
}

func (n *neighbours) anyPending() bool {
	for _, via := range n.nextHop {
		if !via.IsValid() || n.macs[via].state != hopResolved {
			return true
		}
	}
	return false
}

// resolve asks the kernel to resolve every next hop without a MAC, or,
// with confirm, to confirm every next hop in use (NTF_USE on a stale
// entry starts its reachability probe).
func (n *neighbours) resolve(confirm bool) {
	asked := make(map[netip.Addr]bool)
	for _, via := range n.nextHop {
		if !via.IsValid() || asked[via] || (!confirm && n.macs[via].state == hopResolved) {
			continue
		}
		asked[via] = true
		n.nl.NeighSet(&netlink.Neigh{
			LinkIndex: n.ifindex,
			Family:    netlink.FAMILY_V4,
			IP:        net.IP(via.AsSlice()),
			Flags:     netlink.NTF_USE,
		})
	}
}

// publish swaps in a new snapshot for WriteBatch.
func (n *neighbours) publish() {
	t := make(hopTable, len(n.nextHop))
	for dst, via := range n.nextHop {
		switch h, ok := n.macs[via]; {
		case !via.IsValid():
			t[dst] = hop{state: hopUnroutable}
		case ok && h.state == hopResolved:
			t[dst] = h
		default:
			t[dst] = hop{state: hopPending}
		}
	}
	n.table.Store(&t)
	n.mu.Lock()
	close(n.changed)
	n.changed = make(chan struct{})
	n.mu.Unlock()
}
