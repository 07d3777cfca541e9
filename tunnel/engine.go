package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/overlayd/overlayd/subnet"
	"github.com/overlayd/overlayd/subnet/backoff"
	"github.com/overlayd/overlayd/tunnel/idlepoll"
	"github.com/overlayd/overlayd/tunnel/tun"
	"github.com/overlayd/overlayd/tunnel/underlay"
)

// Engine is one running overlayd: its lease, its devices and its workers.
type Engine struct {
	cfg      Config
	reg      subnet.Registry
	host     Host
	fw       Firewall // nil: the packet filter is left alone
	idleReq  idlepoll.Request
	idle     *idlepoll.Governor // nil: CPUs halt when idle (Config.IdlePoll)
	log      *slog.Logger
	extIface ExtIface
	publicIP netip.Addr
	network  *subnet.Config
	backend  backend
	mgr      *subnet.Manager
	lease    subnet.Lease
	tunMTU   int
	// partialChecksums: our lease says we take partial checksums
	// (subnet.Peer.PartialChecksums).
	partialChecksums bool
	// prog is the backend when the kernel forwards (a programmer); nil
	// when overlayd does, through workers.
	prog    programmer
	workers []*worker

	peers atomic.Pointer[subnet.Table]
	stats Stats
	ready atomic.Bool

	firstPeers     chan struct{}
	firstPeersOnce sync.Once

	// A programmer's wanted peers, handed from the watch to routineProgram.
	wanted      atomic.Pointer[[]subnet.Peer]
	wantChanged chan struct{}
	// conns are the workers' underlay sockets, for their counters.
	conns []underlay.Conn

	// rejected remembers why leases were not taken as peers, to log each
	// reason once rather than at every registry change.
	rejected map[netip.Prefix]string
}

// Run brings overlayd up as flanneld would (lease, subnet file, TUN, route)
// and forwards until ctx is done. A lost registry connection never stops
// forwarding: the control plane retries beside the data path.
func Run(ctx context.Context, cfg Config, deps Deps) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if deps.Registry == nil {
		return errors.New("tunnel: Deps.Registry is nil")
	}
	e := &Engine{cfg: cfg, reg: deps.Registry, host: deps.Host, fw: deps.Firewall, idleReq: deps.IdleRequest, log: cfg.Logger,
		firstPeers: make(chan struct{}), wantChanged: make(chan struct{}, 1)}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.host == nil {
		e.host = SystemHost{Log: e.log}
	}
	if e.cfg.FirewallResync == 0 {
		e.cfg.FirewallResync = DefaultFirewallResync
	}
	e.peers.Store(subnet.NewTable(nil))
	return e.run(ctx)
}

// run goes through the engine's phases: the control plane (config,
// backend, lease), the data path (devices and sockets), the routines that
// forward and follow the registry, readiness, and shutdown.
func (e *Engine) run(ctx context.Context) error {
	// A closure: the workers are made later, and must be closed too when
	// a phase after the TUN's creation fails.
	defer func() { closeWorkers(e.workers) }()
	if err := e.startControlPlane(ctx); err != nil {
		return err
	}
	if err := e.startDataPath(); err != nil {
		return err
	}
	if err := e.startFirewall(); err != nil {
		return err
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	ready := e.startRoutines(ctx, cancel, &wg)

	servers, err := e.startServers()
	if err != nil {
		cancel(err)
	}
	defer servers.close()

	e.becomeReady(ctx, cancel, ready)
	<-ctx.Done()
	e.shutdown(&wg)
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// startControlPlane finds this host, reads the network config, picks the
// backend and acquires a lease. A forwarder's TUN is created first: the
// lease says what it can take (takesPartialChecksums).
func (e *Engine) startControlPlane(ctx context.Context) error {
	var err error
	if e.extIface, err = e.host.ExtIface(e.cfg.Iface); err != nil {
		return err
	}
	e.publicIP = e.extIface.Addr
	if e.cfg.PublicIP != "" {
		e.publicIP = netip.MustParseAddr(e.cfg.PublicIP) // checked by Validate
	}
	if on, err := e.host.IPForwarding(); err == nil && !on {
		e.log.Warn("IPv4 forwarding is off in this network namespace: packets between the TUN and the bridge will be dropped; enable it with sysctl -w net.ipv4.ip_forward=1")
	}
	if e.network, err = waitForNetworkConfig(ctx, e.reg, e.log); err != nil {
		return err
	}
	env := backendEnv{PublicIP: e.publicIP, ExtIface: e.extIface, Dataplane: e.cfg.VXLANDataplane, Log: e.log}
	if e.backend, err = newBackend(e.network, env); err != nil {
		return err
	}
	if fwd, ok := e.backend.(forwarder); ok {
		if err := fwd.Prepare(); err != nil {
			return err
		}
		if err := e.createTUN(); err != nil {
			return err
		}
	} else if e.cfg.Steering == SteeringCPU {
		e.log.Warn("--steering=cpu has no effect: the kernel forwards this backend's packets", "backend", e.network.Backend.Type)
	}
	e.partialChecksums = e.takesPartialChecksums()

	prev, err := subnet.ReadSubnetFile(e.cfg.SubnetFile)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		e.log.Warn("ignoring unreadable subnet file", "path", e.cfg.SubnetFile, "error", err)
	}
	e.mgr = subnet.NewManager(e.reg, e.network, subnet.ManagerOptions{
		PublicIP:       e.publicIP,
		BackendType:    e.backend.Type(),
		BackendData:    e.backend.LeaseData(e.partialChecksums),
		PreviousSubnet: prev,
		TTL:            e.cfg.LeaseTTL,
		RenewMargin:    e.cfg.RenewMargin,
		Logger:         e.log,
	})
	if e.lease, err = acquireLease(ctx, e.mgr, e.log); err != nil {
		return err
	}

	mtuBase := e.extIface.MTU
	if e.network.Backend.MTU > 0 {
		mtuBase = e.network.Backend.MTU
	}
	e.tunMTU = mtuBase - e.backend.Overhead()
	e.log.Info("lease acquired",
		"subnet", e.lease.Subnet, "network", e.network.Network, "backend", e.backend.Type(),
		"iface", e.extIface.Name, "iface_addr", e.extIface.Addr, "public_ip", e.publicIP,
		"mtu", e.tunMTU, "port", e.backend.Port(), "partial_checksums", e.partialChecksums)
	return nil
}

// startDataPath makes the lease forward: a forwarder's TUN gets its
// address and route, and its workers their sockets; a programmer's packets
// never reach overlayd, it only sets the kernel up.
func (e *Engine) startDataPath() error {
	if prog, ok := e.backend.(programmer); ok {
		if err := prog.Setup(e.lease, e.network.Network, e.tunMTU); err != nil {
			return err
		}
		e.prog = prog
		e.cfg.TunName, e.cfg.Queues = prog.Device(), 0 // what status shows
		return nil
	}
	if err := e.host.ConfigureTUN(e.cfg.TunName, e.tunMTU, netip.PrefixFrom(e.lease.Subnet.Addr(), 32), e.network.Network); err != nil {
		return err
	}
	laddr := netip.AddrPortFrom(e.extIface.Addr, uint16(e.backend.Port()))
	conns, err := e.host.ListenUnderlay(e.cfg.UnderlayKind, e.extIface, laddr, len(e.workers), e.cfg.BusyPoll)
	if err != nil {
		return err
	}
	hdr := e.backend.(forwarder).Header()
	for i, w := range e.workers {
		w.conn = conns[i]
		w.hdr = hdr
		w.peers = &e.peers
		w.local = e.lease.Subnet
		w.tunAddr = e.lease.Subnet.Addr()
		w.mtu = e.tunMTU
		w.stats = &e.stats
		w.log = e.log
	}
	e.conns = conns
	return nil
}

// startRoutines starts the workers' two routines each, the lease keeper,
// the peer watch and a programmer's sync loop, all on wg; an error from
// any of them cancels ctx. The channel it returns closes once the first
// peers are in place.
func (e *Engine) startRoutines(ctx context.Context, cancel context.CancelCauseFunc, wg *sync.WaitGroup) <-chan struct{} {
	waiting := 0
	for _, w := range e.workers {
		for _, src := range []any{w.tun, w.conn} {
			if waitsInKernel(src) {
				waiting++
			}
		}
	}
	procs := reserveProcs(waiting)
	e.log.Debug("data path routines", "waiting_in_kernel", waiting, "gomaxprocs", procs)
	for _, w := range e.workers {
		wg.Add(2)
		go func() { defer wg.Done(); cancelOnError(cancel, w.routineTUNToUnderlay()) }()
		go func() { defer wg.Done(); cancelOnError(cancel, w.routineUnderlayToTUN()) }()
	}
	wg.Add(2)
	// The lease keeper ends with an error only when our subnet was taken by
	// another host: this host can no longer forward for it, so stop and let
	// the supervisor restart us onto a new subnet.
	go func() { defer wg.Done(); cancelOnError(cancel, ignoreCanceled(e.mgr.Run(ctx))) }()
	go func() { defer wg.Done(); logUnlessCanceled(e.log, "peer watch", e.mgr.WatchPeers(ctx, e.setPeers)) }()
	if e.fw != nil {
		wg.Add(1)
		go func() { defer wg.Done(); e.routineFirewall(ctx) }()
	}
	if e.idle != nil {
		wg.Add(1)
		go func() { defer wg.Done(); e.idle.Run(ctx) }()
	}
	if e.prog == nil {
		return e.firstPeers
	}
	synced := make(chan struct{})
	wg.Add(1)
	go func() { defer wg.Done(); e.routineProgram(ctx, e.prog, synced) }()
	return synced
}

// becomeReady waits for the first peers, then writes the subnet file and
// tells systemd: from then on a container started on the bridge reaches
// every host the registry knew.
func (e *Engine) becomeReady(ctx context.Context, cancel context.CancelCauseFunc, ready <-chan struct{}) {
	select {
	case <-ready:
	case <-ctx.Done():
		return
	}
	ipMasq := e.fw != nil && e.fw.Masquerades()
	if err := subnet.WriteSubnetFile(e.cfg.SubnetFile, e.network.Network, e.lease.Subnet, e.tunMTU, ipMasq); err != nil {
		cancel(fmt.Errorf("write subnet file: %w", err))
		return
	}
	e.ready.Store(true)
	notifySystemd("READY=1")
	e.log.Info("ready", "subnet_file", e.cfg.SubnetFile, "peers", e.peers.Load().Len())
}

// shutdown stops the routines, then releases the lease and a programmer's
// kernel state when --release-on-exit asks for it.
func (e *Engine) shutdown(wg *sync.WaitGroup) {
	e.ready.Store(false)
	closeWorkers(e.workers) // unblocks the routines
	wg.Wait()
	if e.cfg.ReleaseOnExit {
		rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := e.mgr.Release(rctx); err != nil {
			e.log.Warn("could not release lease", "subnet", e.lease.Subnet, "error", err)
		} else {
			e.log.Info("lease released", "subnet", e.lease.Subnet)
		}
		rcancel()
	}
	if e.prog != nil {
		e.stopProgramming(e.prog)
	}
	e.stopFirewall()
}

// startFirewall puts the packet filter rules in place before readiness: a
// container started once the subnet file exists must not meet Docker's
// FORWARD DROP, nor leave unmasqueraded. Masquerading was asked for
// (--ip-masq) and the subnet file will say it is done, so failing it stops
// overlayd; the forward rules, on by default, are only retried.
func (e *Engine) startFirewall() error {
	if e.fw == nil {
		return nil
	}
	n, err := e.fw.Ensure(e.network.Network, e.lease.Subnet, e.ingress())
	if err != nil {
		if e.fw.Masquerades() {
			return fmt.Errorf("--ip-masq: install the packet filter rules: %w", err)
		}
		e.log.Warn("packet filter rules not installed; retrying", "error", err, "retry_every", e.cfg.FirewallResync)
		return nil
	}
	e.log.Info("packet filter rules in place", "masquerade", e.fw.Masquerades(), "changed", n)
	return nil
}

// ingress is the device other hosts' traffic to local containers arrives
// on: the TUN, or the kernel's VXLAN device. host-gw has none of its own
// ("": any): its overlay is the LAN, which may reach this host on another
// interface than --iface (a public IP on a second NIC).
func (e *Engine) ingress() string { return e.cfg.TunName }

// routineFirewall checks the rules every FirewallResync and puts back what
// something else removed (a firewall reload, Docker restarting), as
// flanneld does every --iptables-resync.
func (e *Engine) routineFirewall(ctx context.Context) {
	tick := time.NewTicker(e.cfg.FirewallResync)
	defer tick.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		n, err := e.fw.Ensure(e.network.Network, e.lease.Subnet, e.ingress())
		e.stats.FirewallChecks.Add(1)
		if n > 0 {
			e.stats.FirewallRepairs.Add(1)
		}
		switch {
		case err != nil:
			if err.Error() != lastErr { // each new failure once, not every resync
				e.log.Warn("packet filter rules not in place; retrying", "error", err, "retry_every", e.cfg.FirewallResync)
			}
			lastErr = err.Error()
		case n > 0:
			lastErr = ""
			e.log.Info("packet filter rules put back", "changed", n)
		default:
			lastErr = ""
		}
	}
}

// stopFirewall leaves the rules in place, so that a restarting overlayd
// never leaves traffic without them; a host that leaves the cluster
// (--release-on-exit) removes them.
func (e *Engine) stopFirewall() {
	if e.fw == nil {
		return
	}
	if !e.cfg.ReleaseOnExit {
		e.log.Info("packet filter rules left in place")
		return
	}
	if err := e.fw.Remove(); err != nil {
		e.log.Warn("could not remove the packet filter rules", "error", err)
		return
	}
	e.log.Info("packet filter rules removed")
}

// createTUN creates the TUN queues, with offloads, and a worker for each.
// Reads leave checksums partial (encapsulate completes them where needed),
// unless this host is to be one that needs complete checksums: then its
// TUN checks the ones it receives, as the kernel checks a flanneld host's.
func (e *Engine) createTUN() error {
	opts := []tun.Option{tun.WithOffloads(), tun.WithPartialChecksums()}
	if e.cfg.CompleteChecksums {
		opts = []tun.Option{tun.WithOffloads(), tun.WithChecksumVerify()}
	}
	opts = append(opts, tun.WithBusyPoll(e.cfg.BusyPoll))
	if e.cfg.IdlePoll > 0 && e.idleReq != nil {
		e.idle = idlepoll.New(e.idleReq, e.cfg.IdlePoll, e.log)
		if c, err := idlepoll.ReadIdleCounters(""); err == nil && !c.CanPoll {
			e.log.Warn("--idle-poll will change nothing here: the CPUs have no polling idle state (cpuidle's POLL) beside halting ones")
		}
	}
	pins := make([]cpuPin, e.cfg.Queues)
	if e.cfg.Steering == SteeringCPU && e.cfg.Queues == 1 {
		e.log.Warn("--steering=cpu has no effect with one queue: every packet goes to the one worker", "queues", e.cfg.Queues)
	} else if e.cfg.Steering == SteeringCPU {
		opts = append(opts, tun.WithCPUSteering())
		var err error
		if pins, err = workerPins(e.cfg.Queues); err != nil {
			return fmt.Errorf("--steering=cpu: %w", err)
		}
	}
	devs, err := e.host.OpenTUN(e.cfg.TunName, e.cfg.Queues, opts...)
	if err != nil {
		return err
	}
	for i, dev := range devs {
		e.workers = append(e.workers, &worker{id: i, tun: dev, pin: pins[i], idle: e.idle})
	}
	return nil
}

// takesPartialChecksums reports whether this host can tell its peers to
// leave the TCP and UDP checksums of what they send it partial. It can when
// its TUN has a virtio-net header and does not verify checksums: its Write
// then hands the kernel every TCP and UDP packet marked VirtioNeedsCsum,
// with the checksum field rewritten (offload.CoalesceGather), so the checksum a
// packet came with is never looked at.
func (e *Engine) takesPartialChecksums() bool {
	if e.cfg.CompleteChecksums || len(e.workers) == 0 {
		return false
	}
	fr, ok := e.workers[0].tun.(tun.FeatureReporter)
	if !ok {
		return false
	}
	f, _ := fr.Features()
	return f.VirtioHdr
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
		p, err := e.peerOf(l)
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

// peerOf checks a lease against the network and this host's own lease
// before its backend turns it into a peer. A lease outside the network
// (a key left from an older config, or a stray one such as 0.0.0.0-0)
// would have a kernel backend replace routes outside the overlay, the
// default route included; one overlapping our subnet would let its host
// send from our own addresses past the spoofing check.
func (e *Engine) peerOf(l subnet.Lease) (subnet.Peer, error) {
	switch network := e.network.Network; {
	case !l.Subnet.Addr().Is4() || l.Subnet.Bits() < network.Bits() || !network.Contains(l.Subnet.Addr()):
		return subnet.Peer{}, fmt.Errorf("subnet is outside the network %s", network)
	case l.Subnet.Overlaps(e.lease.Subnet):
		return subnet.Peer{}, fmt.Errorf("subnet overlaps this host's %s", e.lease.Subnet)
	}
	return e.backend.Peer(l)
}

// publishPeers makes peers the peer table. A peer already in the table
// keeps its counters; a peer that left takes its counters with it, and so
// its series leave /metrics.
func (e *Engine) publishPeers(peers []subnet.Peer) {
	prev := e.peers.Load()
	counters := make(map[netip.Prefix]*subnet.PeerCounters, prev.Len())
	for _, p := range prev.Peers() {
		counters[p.Subnet] = p.Counters
	}
	peers = slices.Clone(peers) // the caller's, which a programmer may keep
	for i := range peers {
		peers[i].Counters = counters[peers[i].Subnet]
	}
	next := subnet.NewTable(peers)
	e.peers.Store(next) // publishPeers has one caller at a time: the watch, or routineProgram
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
func waitForNetworkConfig(ctx context.Context, reg subnet.Registry, log *slog.Logger) (*subnet.Config, error) {
	b := backoff.Backoff{Min: time.Second, Max: 30 * time.Second}
	for {
		cfg, err := reg.GetConfig(ctx)
		d := b.Next() // the wait if this attempt failed
		switch {
		case err == nil:
			if cfg.Ignored != nil { // written by another tool, or an older overlayd
				log.Warn("network config: ignoring fields overlayd does not know or support; fix them with overlayd config put", "error", cfg.Ignored)
			}
			return cfg, nil
		case errors.Is(err, subnet.ErrConfigNotFound):
			log.Warn("network config not found; waiting for it", "error", err, "retry_in", d)
		case errors.Is(err, subnet.ErrInvalidConfig):
			return nil, err
		default:
			log.Warn("registry unreachable; retrying", "error", err, "retry_in", d)
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
