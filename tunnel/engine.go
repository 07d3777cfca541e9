package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/overlayd/overlayd/internal/backoff"
	"github.com/overlayd/overlayd/subnet"
	"github.com/overlayd/overlayd/subnet/etcd"
	"github.com/overlayd/overlayd/tunnel/afpacket"
	"github.com/overlayd/overlayd/tunnel/tun"
	"github.com/overlayd/overlayd/tunnel/udp"
)

// Engine is one running overlayd: its lease, its devices and its workers.
type Engine struct {
	cfg      Config
	log      *slog.Logger
	underlay Underlay
	publicIP netip.Addr
	network  *subnet.Config
	backend  backend
	lease    subnet.Lease
	tunMTU   int
	// partialChecksums: our lease says we take partial checksums
	// (subnet.Peer.PartialChecksums).
	partialChecksums bool

	peers atomic.Pointer[subnet.Table]
	stats Stats
	ready atomic.Bool

	firstPeers     chan struct{}
	firstPeersOnce sync.Once

	// A programmer's wanted peers, handed from the watch to routineProgram.
	wanted      atomic.Pointer[[]subnet.Peer]
	wantChanged chan struct{}
	// conns are the workers' underlay sockets, for their counters.
	conns []udp.Conn

	// rejected remembers why leases were not taken as peers, to log each
	// reason once rather than at every registry change.
	rejected map[netip.Prefix]string
}

// Run brings overlayd up as flanneld would (lease, subnet file, TUN, route)
// and forwards until ctx is done. A lost etcd connection never stops
// forwarding: the control plane retries beside the data path.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	e := &Engine{cfg: cfg, log: cfg.Logger, firstPeers: make(chan struct{}), wantChanged: make(chan struct{}, 1)}
	if e.log == nil {
		e.log = slog.Default()
	}
	e.peers.Store(subnet.NewTable(nil))
	return e.run(ctx)
}

func (e *Engine) run(ctx context.Context) error {
	var err error
	if e.underlay, err = ResolveUnderlay(e.cfg.Iface); err != nil {
		return err
	}
	e.publicIP = e.underlay.Addr
	if e.cfg.PublicIP != "" {
		e.publicIP = netip.MustParseAddr(e.cfg.PublicIP) // checked by Validate
	}
	if on, err := ipForwarding(); err == nil && !on {
		e.log.Warn("IPv4 forwarding is off in this network namespace: packets between the TUN and the bridge will be dropped; enable it with sysctl -w net.ipv4.ip_forward=1")
	}

	reg, err := etcd.New(etcd.Options{
		Endpoints: e.cfg.EtcdEndpoints,
		Prefix:    e.cfg.EtcdPrefix,
		CAFile:    e.cfg.EtcdCAFile,
		CertFile:  e.cfg.EtcdCertFile,
		KeyFile:   e.cfg.EtcdKeyFile,
		Username:  e.cfg.EtcdUsername,
		Password:  e.cfg.EtcdPassword,
	})
	if err != nil {
		return err
	}
	defer reg.Close()

	if e.network, err = waitForNetworkConfig(ctx, reg, e.cfg.EtcdPrefix, e.log); err != nil {
		return err
	}
	env := backendEnv{PublicIP: e.publicIP, Underlay: e.underlay, Dataplane: e.cfg.VXLANDataplane, Log: e.log}
	if e.backend, err = newBackend(e.network, env); err != nil {
		return err
	}

	// A forwarder's TUN comes before the lease, which says what it can
	// take (takesPartialChecksums).
	var workers []*worker
	if fwd, ok := e.backend.(forwarder); ok {
		if err := fwd.Prepare(); err != nil {
			return err
		}
		if workers, err = e.createTUN(); err != nil {
			return err
		}
	}
	defer closeWorkers(workers)
	e.partialChecksums = e.takesPartialChecksums(workers)

	prev, err := subnet.ReadSubnetFile(e.cfg.SubnetFile)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		e.log.Warn("ignoring unreadable subnet file", "path", e.cfg.SubnetFile, "error", err)
	}
	mgr := subnet.NewManager(reg, e.network, subnet.ManagerOptions{
		PublicIP:       e.publicIP,
		BackendType:    e.backend.Type(),
		BackendData:    e.backend.LeaseData(e.partialChecksums),
		PreviousSubnet: prev,
		TTL:            e.cfg.LeaseTTL,
		RenewMargin:    e.cfg.RenewMargin,
		Logger:         e.log,
	})
	if e.lease, err = acquireLease(ctx, mgr, e.log); err != nil {
		return err
	}

	mtuBase := e.underlay.MTU
	if e.network.Backend.MTU > 0 {
		mtuBase = e.network.Backend.MTU
	}
	e.tunMTU = mtuBase - e.backend.Overhead()
	e.log.Info("lease acquired",
		"subnet", e.lease.Subnet, "network", e.network.Network, "backend", e.backend.Type(),
		"iface", e.underlay.Name, "iface_addr", e.underlay.Addr, "public_ip", e.publicIP,
		"mtu", e.tunMTU, "port", e.backend.Port(), "partial_checksums", e.partialChecksums)

	// A forwarder's TUN gets its address and route, and its workers their
	// sockets; a programmer's packets never reach overlayd, it only sets
	// the kernel up.
	prog, kernel := e.backend.(programmer)
	if kernel {
		if err := prog.Setup(e.lease, e.network.Network, e.tunMTU); err != nil {
			return err
		}
		e.cfg.TunName, e.cfg.Queues = prog.Device(), 0 // what status shows
	} else if err := e.openDataPath(workers); err != nil {
		return err
	}
	for _, w := range workers {
		e.conns = append(e.conns, w.conn)
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(2)
		go func() { defer wg.Done(); cancelOnError(cancel, w.routineTUNToUnderlay()) }()
		go func() { defer wg.Done(); cancelOnError(cancel, w.routineUnderlayToTUN()) }()
	}
	wg.Add(2)
	// The lease keeper ends with an error only when our subnet was taken by
	// another host: this host can no longer forward for it, so stop and let
	// the supervisor restart us onto a new subnet.
	go func() { defer wg.Done(); cancelOnError(cancel, ignoreCanceled(mgr.Run(ctx))) }()
	go func() { defer wg.Done(); logUnlessCanceled(e.log, "peer watch", mgr.WatchPeers(ctx, e.setPeers)) }()
	ready := e.firstPeers
	if kernel {
		synced := make(chan struct{})
		ready = synced
		wg.Add(1)
		go func() { defer wg.Done(); e.routineProgram(ctx, prog, synced) }()
	}

	servers, err := e.startServers()
	if err != nil {
		cancel(err)
	}
	defer servers.close()

	select {
	case <-ready:
	case <-ctx.Done():
	}
	if ctx.Err() == nil {
		if err := subnet.WriteSubnetFile(e.cfg.SubnetFile, e.network.Network, e.lease.Subnet, e.tunMTU, false); err != nil {
			cancel(fmt.Errorf("write subnet file: %w", err))
		} else {
			e.ready.Store(true)
			notifySystemd("READY=1")
			e.log.Info("ready", "subnet_file", e.cfg.SubnetFile, "peers", e.peers.Load().Len())
		}
	}

	<-ctx.Done()
	e.ready.Store(false)
	closeWorkers(workers) // unblocks the routines
	wg.Wait()
	if e.cfg.ReleaseOnExit {
		rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := mgr.Release(rctx); err != nil {
			e.log.Warn("could not release lease", "subnet", e.lease.Subnet, "error", err)
		} else {
			e.log.Info("lease released", "subnet", e.lease.Subnet)
		}
		rcancel()
	}
	if kernel {
		e.stopProgramming(prog)
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// createTUN creates the TUN queues, with offloads, and a worker for each.
// Reads leave checksums partial (encapsulate completes them where needed),
// unless this host is to be one that needs complete checksums: then its
// TUN checks the ones it receives, as the kernel checks a flanneld host's.
func (e *Engine) createTUN() ([]*worker, error) {
	opts := []tun.Option{tun.WithOffloads(), tun.WithPartialChecksums()}
	if e.cfg.CompleteChecksums {
		opts = []tun.Option{tun.WithOffloads(), tun.WithChecksumVerify()}
	}
	devs, err := tun.Create(e.cfg.TunName, e.cfg.Queues, opts...)
	if err != nil {
		return nil, fmt.Errorf("create TUN %s: %w", e.cfg.TunName, err)
	}
	workers := make([]*worker, 0, len(devs))
	for i, dev := range devs {
		workers = append(workers, &worker{id: i, tun: dev})
	}
	if fr, ok := devs[0].(tun.FeatureReporter); ok {
		f, err := fr.Features()
		e.log.Info("TUN offloads", "tun", e.cfg.TunName, "virtio_hdr", f.VirtioHdr, "tso", f.TSO, "uso", f.USO)
		if err != nil {
			e.log.Warn("TUN running without some offloads: more system calls and checksums per packet", "error", err)
		}
	}
	return workers, nil
}

// takesPartialChecksums reports whether this host can tell its peers to
// leave the TCP and UDP checksums of what they send it partial. It can when
// its TUN has a virtio-net header and does not verify checksums: its Write
// then hands the kernel every TCP and UDP packet marked VirtioNeedsCsum,
// with the checksum field rewritten (encap.Coalesce), so the checksum a
// packet came with is never looked at.
func (e *Engine) takesPartialChecksums(workers []*worker) bool {
	if e.cfg.CompleteChecksums || len(workers) == 0 {
		return false
	}
	fr, ok := workers[0].tun.(tun.FeatureReporter)
	if !ok {
		return false
	}
	f, _ := fr.Features()
	return f.VirtioHdr
}

// openDataPath configures the TUN and opens one underlay socket per queue.
func (e *Engine) openDataPath(workers []*worker) error {
	if err := configureTUN(e.cfg.TunName, e.tunMTU, e.lease.Subnet, e.network.Network); err != nil {
		return err
	}
	laddr := netip.AddrPortFrom(e.underlay.Addr, uint16(e.backend.Port()))
	fanout := new(afpacket.Group) // the AF_PACKET workers share flows, neighbours, guard
	for _, w := range workers {
		conn, err := e.listenUnderlay(laddr, len(workers), fanout, w.id == 0)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", laddr, err)
		}
		w.conn = conn
		w.hdr = e.backend.(forwarder).Header()
		w.peers = &e.peers
		w.local = e.lease.Subnet
		w.tunAddr = e.lease.Subnet.Addr()
		w.mtu = e.tunMTU
		w.stats = &e.stats
		w.log = e.log
	}
	return nil
}

// listenUnderlay opens one worker's underlay: a UDP socket, one per worker
// with SO_REUSEPORT, or with --underlay=afpacket an AF_PACKET socket in the
// workers' fanout group. The first worker's is logged.
func (e *Engine) listenUnderlay(laddr netip.AddrPort, workers int, fanout *afpacket.Group, first bool) (udp.Conn, error) {
	if e.cfg.Underlay == UnderlayAFPacket {
		conn, err := afpacket.Listen(e.underlay.Name, laddr, afpacket.Options{Group: fanout, GSO: true})
		if err == nil && first {
			eff := conn.(afpacket.Configured).Effective()
			e.log.Info("underlay afpacket", "iface", e.underlay.Name, "addr", laddr, "guard", eff.Guard, "gso", eff.GSO,
				"ring_blocks", eff.Blocks, "block_size", eff.BlockSize, "batch", conn.BatchSize(), "queues", workers)
		}
		return conn, err
	}
	if first {
		// A crashed afpacket run may have left its tc guard, which would
		// drop every datagram before the socket saw it.
		if err := afpacket.RemoveStaleGuard(e.underlay.Name, laddr); err != nil {
			e.log.Debug("could not check for a stale afpacket guard", "error", err)
		}
	}
	// GSO sends each run of equal datagrams to one peer as one message;
	// GRO receives a flow's datagrams coalesced. Both are probed and stay
	// off where the kernel lacks them.
	conn, err := udp.Listen(laddr, udp.Options{ReusePort: workers > 1, GSO: true, GRO: true})
	if c, ok := conn.(udp.Configured); ok && err == nil && first {
		eff := c.Effective()
		e.log.Info("underlay socket", "addr", laddr, "gso", eff.GSO, "gro", eff.GRO,
			"rcvbuf", eff.RecvBuffer, "sndbuf", eff.SendBuffer, "batch", conn.BatchSize(), "queues", workers)
		if err := c.Unsupported(); err != nil {
			e.log.Warn("running without some underlay offloads: more system calls per packet", "error", err)
		}
	}
	return conn, err
}

func closeWorkers(workers []*worker) {
	for _, w := range workers {
		if w.tun != nil {
			w.tun.Close()
		}
		if w.conn != nil {
			w.conn.Close()
		}
	}
}

// setPeers turns the registry's view into peers. A forwarder's table is
// rebuilt and swapped in whole: the data path sees either the old table or
// the new one. A programmer's peers go to routineProgram, which publishes
// the ones it could program.
func (e *Engine) setPeers(leases []subnet.Lease) {
	peers := make([]subnet.Peer, 0, len(leases))
	rejected := make(map[netip.Prefix]string)
	for _, l := range leases {
		p, err := e.backend.Peer(l)
		if err != nil {
			rejected[l.Subnet] = err.Error()
			if e.rejected[l.Subnet] != err.Error() {
				level := slog.LevelWarn
				if errors.Is(err, errOtherBackend) {
					level = slog.LevelDebug
				}
				e.log.Log(context.Background(), level, "ignoring lease", "subnet", l.Subnet, "public_ip", l.Attrs.PublicIP, "reason", err)
			}
			continue
		}
		peers = append(peers, p)
	}
	e.rejected = rejected
	if _, ok := e.backend.(programmer); ok {
		e.wanted.Store(&peers)
		select {
		case e.wantChanged <- struct{}{}:
		default: // a sync is pending already; it will load these peers
		}
	} else {
		e.publishPeers(peers)
	}
	e.firstPeersOnce.Do(func() { close(e.firstPeers) })
}

// publishPeers makes peers the peer table.
func (e *Engine) publishPeers(peers []subnet.Peer) {
	next := subnet.NewTable(peers)
	prev := e.peers.Swap(next)
	logPeerChanges(e.log, prev, next)
}

// resyncInterval is how often a kernel backend's state is checked against
// the peers when nothing changed: to put back what someone else removed
// (flanneld checks its routes every 10 s too) and to retry failed peers.
const resyncInterval = 10 * time.Second

// routineProgram keeps a programmer's kernel state in line with the wanted
// peers, after every change and every resyncInterval, and publishes the
// peers in place as the peer table (what status shows). It closes synced
// after the first sync of the registry's peers.
func (e *Engine) routineProgram(ctx context.Context, prog programmer, synced chan<- struct{}) {
	tick := time.NewTicker(resyncInterval)
	defer tick.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.wantChanged:
		case <-tick.C:
		}
		want := e.wanted.Load()
		if want == nil {
			continue // the registry has not answered yet
		}
		programmed, err := prog.Sync(*want)
		e.publishPeers(programmed)
		switch {
		case err == nil:
			lastErr = ""
		case err.Error() != lastErr: // each new failure once, not every resync
			lastErr = err.Error()
			e.log.Warn("peers not programmed; retrying", "backend", e.backend.Type(),
				"programmed", len(programmed), "skipped", len(*want)-len(programmed), "error", err, "retry_every", resyncInterval)
		}
		if synced != nil {
			close(synced)
			synced = nil
		}
	}
}

// stopProgramming leaves a programmer's kernel state in place, as flanneld
// does, so that the kernel keeps forwarding while overlayd restarts; a host
// that leaves the cluster (--release-on-exit) takes it down.
func (e *Engine) stopProgramming(prog programmer) {
	if !e.cfg.ReleaseOnExit {
		e.log.Info("kernel forwarding state left in place", "backend", e.backend.Type(), "device", prog.Device())
		return
	}
	if err := prog.Teardown(); err != nil {
		e.log.Warn("could not remove kernel forwarding state", "backend", e.backend.Type(), "error", err)
		return
	}
	e.log.Info("kernel forwarding state removed", "backend", e.backend.Type(), "device", prog.Device())
}

func logPeerChanges(log *slog.Logger, prev, next *subnet.Table) {
	old := make(map[netip.Prefix]netip.AddrPort, prev.Len())
	for _, p := range prev.Peers() {
		old[p.Subnet] = p.Underlay
	}
	for _, p := range next.Peers() {
		if u, ok := old[p.Subnet]; !ok || u != p.Underlay {
			log.Info("peer added", "subnet", p.Subnet, "public_ip", p.Underlay.Addr())
		}
		delete(old, p.Subnet)
	}
	for s, u := range old {
		log.Info("peer removed", "subnet", s, "public_ip", u.Addr())
	}
}

// waitForNetworkConfig reads <prefix>/config, waiting while it is absent or
// etcd is unreachable (as flanneld does); a malformed config is an error.
func waitForNetworkConfig(ctx context.Context, reg *etcd.Registry, prefix string, log *slog.Logger) (*subnet.Config, error) {
	b := backoff.Backoff{Min: time.Second, Max: 30 * time.Second}
	for {
		cfg, err := reg.GetConfig(ctx)
		d := b.Next() // the wait if this attempt failed
		switch {
		case err == nil:
			return cfg, nil
		case errors.Is(err, subnet.ErrConfigNotFound):
			log.Warn("network config not found in etcd; waiting for it", "key", prefix+"/config",
				"fix", fmt.Sprintf(`overlayd config put --etcd-prefix %s '{"Network":"100.96.0.0/16","Backend":{"Type":"udp"}}'`, prefix))
		case errors.Is(err, subnet.ErrInvalidConfig):
			return nil, err
		default:
			log.Warn("etcd unreachable; retrying", "error", err, "retry_in", d)
		}
		if err := backoff.Sleep(ctx, d); err != nil {
			return nil, err
		}
	}
}

// acquireLease retries transient registry failures with backoff.
func acquireLease(ctx context.Context, mgr *subnet.Manager, log *slog.Logger) (subnet.Lease, error) {
	b := backoff.Backoff{Min: time.Second, Max: 30 * time.Second}
	for {
		l, err := mgr.Acquire(ctx)
		if err == nil {
			return l, nil
		}
		if errors.Is(err, subnet.ErrNoFreeSubnet) {
			return subnet.Lease{}, err
		}
		d := b.Next()
		log.Warn("could not acquire a subnet lease; retrying", "error", err, "retry_in", d)
		if err := backoff.Sleep(ctx, d); err != nil {
			return subnet.Lease{}, err
		}
	}
}

func cancelOnError(cancel context.CancelCauseFunc, err error) {
	if err != nil {
		cancel(err)
	}
}

func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func logUnlessCanceled(log *slog.Logger, what string, err error) {
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Error(what+" stopped", "error", err)
	}
}
