package subnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/overlayd/overlayd/subnet/backoff"
)

// Lease timing defaults, flanneld's.
const (
	DefaultLeaseTTL    = 24 * time.Hour
	DefaultRenewMargin = time.Hour // --subnet-lease-renew-margin=60
)

const (
	raceRetries   = 10  // flannel's: attempts when another host takes our pick first
	maxCandidates = 100 // flannel's: pick at random among the first 100 free subnets
)

// ManagerOptions says what goes into the local host's lease and how long it lives.
type ManagerOptions struct {
	PublicIP    netip.Addr      // the lease's PublicIP: where peers send to
	BackendType string          // the lease's BackendType ("" for flanneld-style udp leases)
	BackendData json.RawMessage // the lease's BackendData (nil for none)

	// PreviousSubnet is the subnet from the subnet file of an earlier run
	// (ReadSubnetFile); the zero Prefix when there is none.
	PreviousSubnet netip.Prefix

	TTL         time.Duration // registry lease lifetime; default DefaultLeaseTTL
	RenewMargin time.Duration // renew this long before expiry; default DefaultRenewMargin; TTL/2 if not below TTL
	Logger      *slog.Logger  // nil logs nothing
}

// Manager acquires the local host's subnet lease, keeps it alive and
// follows the other hosts' leases, with flanneld's rules on top of a
// Registry. Its methods are safe for concurrent use.
type Manager struct {
	reg  Registry
	cfg  *Config
	opts ManagerOptions
	log  *slog.Logger

	mu    sync.Mutex
	lease Lease
	held  bool // lease is ours: acquired and neither released nor taken
}

// NewManager returns a Manager for the network described by cfg.
func NewManager(reg Registry, cfg *Config, opts ManagerOptions) *Manager {
	m := &Manager{reg: reg, cfg: cfg, opts: opts, log: opts.Logger}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.opts.TTL <= 0 {
		m.opts.TTL = DefaultLeaseTTL
	}
	if m.opts.RenewMargin <= 0 {
		m.opts.RenewMargin = DefaultRenewMargin
	}
	if m.opts.RenewMargin >= m.opts.TTL {
		// A margin as long as the TTL would renew without pause.
		m.opts.RenewMargin = m.opts.TTL / 2
	}
	return m
}

// Lease returns the local host's lease, and whether it holds one.
func (m *Manager) Lease() (Lease, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lease, m.held
}

func (m *Manager) setLease(l Lease, held bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lease, m.held = l, held
}

func (m *Manager) attrs() LeaseAttrs {
	return LeaseAttrs{PublicIP: m.opts.PublicIP, BackendType: m.opts.BackendType, BackendData: m.opts.BackendData}
}

// errRace means another host changed the leases under us: list again.
var errRace = errors.New("lease changed concurrently")

// Acquire gets the local host a lease, in flanneld's order:
//  1. a lease that carries our PublicIP is reused with our attributes (one
//     outside the config's range is deleted instead);
//  2. else PreviousSubnet, if it is free and fits the config;
//  3. else a random free subnet among the first 100 between SubnetMin and
//     SubnetMax.
//
// A new lease is created only if its subnet has none; when another host is
// faster, Acquire starts over, up to 10 times. When the range is full the
// error is a *NoFreeSubnetError (ErrNoFreeSubnet). Registry errors are
// returned as they come: the caller retries with backoff.
func (m *Manager) Acquire(ctx context.Context) (Lease, error) {
	if !m.opts.PublicIP.Is4() {
		return Lease{}, fmt.Errorf("acquire subnet lease: PublicIP %v is not an IPv4 address", m.opts.PublicIP)
	}
	// The subnets lost in a race, skipped by the next tries: a key we
	// cannot read (which ListLeases leaves out) stays lost at every try.
	var lostRaces []Lease
	for range raceRetries {
		l, err := m.tryAcquire(ctx, &lostRaces)
		if errors.Is(err, errRace) {
			m.log.Debug("subnet lease race; trying again", "error", err)
			continue
		}
		if err != nil {
			return Lease{}, fmt.Errorf("acquire subnet lease: %w", err)
		}
		m.setLease(l, true)
		return l, nil
	}
	return Lease{}, fmt.Errorf("acquire subnet lease: other hosts took the chosen subnet %d times in a row; retry later", raceRetries)
}

// tryAcquire makes one attempt, skipping the subnets of lost; when it
// loses a race for a subnet it adds it there.
func (m *Manager) tryAcquire(ctx context.Context, lost *[]Lease) (Lease, error) {
	leases, _, err := m.reg.ListLeases(ctx)
	if err != nil {
		return Lease{}, fmt.Errorf("list leases: %w", err)
	}
	ours, others := m.splitOurs(leases)
	others = append(others, *lost...)
	attrs := m.attrs()

	for _, l := range ours {
		if overlapsAny(l.Subnet, *lost) {
			continue
		}
		if !m.cfg.Compatible(l.Subnet) {
			m.log.Info("found lease for our public IP that does not fit the network config; deleting it",
				"subnet", l.Subnet, "public_ip", m.opts.PublicIP)
			err := m.reg.DeleteLease(ctx, l.Subnet, m.opts.PublicIP)
			if err != nil && !errors.Is(err, ErrLeaseTaken) { // taken: no longer ours to delete
				return Lease{}, fmt.Errorf("delete lease %s: %w", l.Subnet, err)
			}
			continue
		}
		m.log.Info("found lease for our public IP; reusing it", "subnet", l.Subnet, "public_ip", m.opts.PublicIP)
		got, err := m.reg.RenewLease(ctx, l.Subnet, attrs, m.opts.TTL)
		if errors.Is(err, ErrLeaseNotFound) || errors.Is(err, ErrLeaseTaken) {
			// Gone or taken since the listing, or under a key we do not
			// renew (a dual-stack one).
			*lost = append(*lost, Lease{Subnet: l.Subnet})
			return Lease{}, fmt.Errorf("%w: %s vanished: %w", errRace, l.Subnet, err)
		}
		if err != nil {
			return Lease{}, fmt.Errorf("reuse lease %s: %w", l.Subnet, err)
		}
		return got, nil
	}

	if prev := m.opts.PreviousSubnet; prev.IsValid() {
		switch {
		case !m.cfg.Compatible(prev):
			m.log.Warn("previous subnet does not fit the network config; ignoring it", "subnet", prev,
				"subnet_min", m.cfg.SubnetMin, "subnet_max", m.cfg.SubnetMax, "subnet_len", m.cfg.SubnetLen)
		case overlapsAny(prev, others):
			m.log.Info("previous subnet is leased by another host; picking a new one", "subnet", prev)
		default:
			m.log.Info("found previously leased subnet; reusing it", "subnet", prev)
			return m.create(ctx, prev, attrs, lost)
		}
	}

	sn, err := freeSubnet(m.cfg, others)
	if err != nil {
		return Lease{}, err
	}
	m.log.Info("picked a free subnet", "subnet", sn, "subnet_min", m.cfg.SubnetMin, "subnet_max", m.cfg.SubnetMax)
	return m.create(ctx, sn, attrs, lost)
}

// splitOurs separates the leases carrying our PublicIP, the one matching
// PreviousSubnet first, from the others.
func (m *Manager) splitOurs(leases []Lease) (ours, others []Lease) {
	for _, l := range leases {
		switch {
		case l.Attrs.PublicIP != m.opts.PublicIP:
			others = append(others, l)
		case l.Subnet == m.opts.PreviousSubnet:
			ours = append([]Lease{l}, ours...)
		default:
			ours = append(ours, l)
		}
	}
	return ours, others
}

func (m *Manager) create(ctx context.Context, sn netip.Prefix, attrs LeaseAttrs, lost *[]Lease) (Lease, error) {
	l, err := m.reg.CreateLease(ctx, sn, attrs, m.opts.TTL)
	if errors.Is(err, ErrLeaseExists) {
		*lost = append(*lost, Lease{Subnet: sn})
		return Lease{}, fmt.Errorf("%w: %s was taken first", errRace, sn)
	}
	if err != nil {
		return Lease{}, fmt.Errorf("create lease %s: %w", sn, err)
	}
	return l, nil
}

func overlapsAny(sn netip.Prefix, leases []Lease) bool {
	for _, l := range leases {
		if l.Subnet.Overlaps(sn) {
			return true
		}
	}
	return false
}

// freeSubnet picks at random among the first maxCandidates subnets of the
// config's range that overlap no lease.
func freeSubnet(cfg *Config, leases []Lease) (netip.Prefix, error) {
	size := uint64(1) << (32 - cfg.SubnetLen)
	taken := make(map[uint32]bool, len(leases))
	var odd []Lease // leases of another length: rare, checked by overlap
	for _, l := range leases {
		switch {
		case !l.Subnet.Addr().Is4():
		case l.Subnet.Bits() == cfg.SubnetLen:
			taken[addrU32(l.Subnet.Addr())] = true
		default:
			odd = append(odd, l)
		}
	}
	var free []uint32
	for a := uint64(addrU32(cfg.SubnetMin)); a <= uint64(addrU32(cfg.SubnetMax)) && len(free) < maxCandidates; a += size {
		if taken[uint32(a)] || overlapsAny(netip.PrefixFrom(u32Addr(uint32(a)), cfg.SubnetLen), odd) {
			continue
		}
		free = append(free, uint32(a))
	}
	if len(free) == 0 {
		return netip.Prefix{}, &NoFreeSubnetError{Min: cfg.SubnetMin, Max: cfg.SubnetMax, SubnetLen: cfg.SubnetLen, Leases: len(leases)}
	}
	return netip.PrefixFrom(u32Addr(free[rand.IntN(len(free))]), cfg.SubnetLen), nil
}

// Run keeps the acquired lease alive until ctx is done, then returns nil.
//
// Renewal keeps the one registry lease alive (a keep-alive at Expiration -
// RenewMargin, retried every minute at most while it fails), so peers see
// no change, unlike flanneld, which grants a new lease and rewrites the key.
// Run also watches the lease: when it is deleted or expires, Run takes the
// same subnet back instead of exiting as flanneld does. An unreachable
// registry is logged and retried with backoff, never fatal. Run returns an
// error matching ErrLeaseTaken only when another host now holds our subnet.
// Call Acquire first, and Release only after Run has returned.
func (m *Manager) Run(ctx context.Context) error {
	l, ok := m.Lease()
	if !ok {
		return errors.New("subnet manager: Run called before Acquire")
	}
	sn := l.Subnet

	lost := make(chan struct{}, 1)
	taken := make(chan Lease, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() {
		m.follow(wctx, "own lease", func(r WatchResult) {
			gone, thief := ownLeaseState(r, sn, m.opts.PublicIP)
			switch {
			case thief != nil:
				select {
				case taken <- *thief:
				default:
				}
			case gone:
				select {
				case lost <- struct{}{}:
				default:
				}
			}
		})
	})

	retry := min(time.Minute, max(m.opts.RenewMargin/4, time.Second))
	bo := backoff.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
	reacquire := false
	timer := time.NewTimer(m.renewDelay(l))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case thief := <-taken:
			m.setLease(l, false)
			return fmt.Errorf("%w: %s now has PublicIP %s", ErrLeaseTaken, sn, thief.Attrs.PublicIP)
		case <-lost:
			if _, held := m.Lease(); !held {
				return nil // Released
			}
			m.log.Warn("our subnet lease was deleted or expired; taking the same subnet back", "subnet", sn)
			reacquire = true
		case <-timer.C:
		}

		var err error
		if reacquire {
			l, err = m.retake(ctx, sn)
			if err == nil {
				m.log.Info("re-acquired our subnet lease", "subnet", sn, "expires", l.Expiration)
			}
		} else {
			l, err = m.reg.RenewLease(ctx, sn, m.attrs(), m.opts.TTL)
			if err == nil {
				m.log.Debug("renewed subnet lease", "subnet", sn, "expires", l.Expiration)
			}
			if errors.Is(err, ErrLeaseNotFound) {
				m.log.Warn("our subnet lease was gone at renewal; taking the same subnet back", "subnet", sn)
				reacquire = true
				l, err = m.retake(ctx, sn)
			}
		}
		timer.Stop()
		switch {
		case err == nil:
			reacquire = false
			bo.Reset()
			m.setLease(l, true)
			timer.Reset(m.renewDelay(l))
		case errors.Is(err, ErrLeaseTaken):
			m.setLease(l, false)
			return err
		case ctx.Err() != nil:
			return nil
		case reacquire:
			d := bo.Next()
			m.log.Warn("cannot re-acquire our subnet lease; retrying", "subnet", sn, "error", err, "retry_in", d)
			timer.Reset(d)
		default:
			m.log.Warn("cannot renew our subnet lease; retrying", "subnet", sn, "error", err, "retry_in", retry)
			timer.Reset(retry)
		}
	}
}

// ownLeaseState reads what a watch result says about our lease sn: gone,
// or rewritten by a host with another PublicIP (thief).
func ownLeaseState(r WatchResult, sn netip.Prefix, ours netip.Addr) (gone bool, thief *Lease) {
	if r.Resync {
		for _, l := range r.Leases {
			if l.Subnet == sn {
				if l.Attrs.PublicIP != ours {
					return false, &l
				}
				return false, nil
			}
		}
		return true, nil
	}
	for _, ev := range r.Events {
		if ev.Lease.Subnet != sn {
			continue
		}
		// Only the last event about our subnet tells its state.
		gone, thief = ev.Type == EventRemoved, nil
		if !gone && ev.Lease.Attrs.PublicIP != ours {
			thief = &ev.Lease
		}
	}
	return gone, thief
}

// retake creates our lease for sn again. When the subnet already has a
// lease again, RenewLease keeps it if it carries our PublicIP (we won an
// earlier race, or a restarted twin wrote it) or cannot be read (garbage
// written over ours), and says ErrLeaseTaken if it carries another's.
func (m *Manager) retake(ctx context.Context, sn netip.Prefix) (Lease, error) {
	l, err := m.reg.CreateLease(ctx, sn, m.attrs(), m.opts.TTL)
	if !errors.Is(err, ErrLeaseExists) {
		return l, err
	}
	l, err = m.reg.RenewLease(ctx, sn, m.attrs(), m.opts.TTL)
	if errors.Is(err, ErrLeaseNotFound) {
		return Lease{}, fmt.Errorf("%w: %s came and went while we took it back", errRace, sn)
	}
	return l, err
}

// renewDelay is the wait before renewing l; a reservation never needs one.
func (m *Manager) renewDelay(l Lease) time.Duration {
	if l.Expiration.IsZero() {
		return time.Duration(1<<63 - 1)
	}
	return max(time.Until(l.Expiration)-m.opts.RenewMargin, time.Second)
}

// WatchPeers calls onChange with the complete, current set of the other
// hosts' leases (ours left out), ordered by subnet: once after the first
// listing, even if empty, and then after every change to it. Renewals that
// change nothing are not changes. A broken watch is resumed from the last
// revision seen with backoff (100ms to 5s), and one that fell behind
// compaction re-lists, so no change is missed. onChange runs on WatchPeers'
// goroutine and should not block for long. WatchPeers returns nil once ctx
// is done.
func (m *Manager) WatchPeers(ctx context.Context, onChange func(peers []Lease)) error {
	own, _ := m.Lease()
	w := NewWatcher(own.Subnet)
	first := true
	m.follow(ctx, "peers", func(r WatchResult) {
		events := w.Apply(r)
		for _, ev := range events {
			m.log.Debug("peer lease "+ev.Type.String(), "subnet", ev.Lease.Subnet, "public_ip", ev.Lease.Attrs.PublicIP)
		}
		if first || len(events) > 0 {
			first = false
			onChange(w.Leases())
		}
	})
	return nil
}

// follow lists the leases once, then watches them until ctx is done,
// passing every result to apply. Breaks are logged and resumed from the
// last revision; it returns only when ctx is done.
func (m *Manager) follow(ctx context.Context, what string, apply func(WatchResult)) {
	bo := backoff.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	var rev int64
	for ctx.Err() == nil {
		if rev == 0 {
			leases, r, err := m.reg.ListLeases(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				d := bo.Next()
				m.log.Warn("cannot list leases; retrying", "watch", what, "error", err, "retry_in", d)
				backoff.Sleep(ctx, d)
				continue
			}
			apply(WatchResult{Revision: r, Resync: true, Leases: leases})
			rev = r
		}
		started := time.Now()
		err := m.watchOnce(ctx, rev+1, func(r WatchResult) {
			apply(r)
			if r.Resync {
				rev = r.Revision // a new start: etcd may have gone back (restored)
			} else {
				rev = max(rev, r.Revision)
			}
			bo.Reset()
		})
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > bo.Max {
			bo.Reset() // it was a healthy watch that broke, not a failing one
		}
		d := bo.Next()
		m.log.Warn("lease watch broken; resuming", "watch", what, "from_revision", rev+1, "error", err, "retry_in", d)
		backoff.Sleep(ctx, d)
	}
}

// watchOnce runs one Registry.WatchLeases and hands its results to apply on
// the calling goroutine.
func (m *Manager) watchOnce(ctx context.Context, since int64, apply func(WatchResult)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan WatchResult)
	errc := make(chan error, 1)
	go func() { errc <- m.reg.WatchLeases(ctx, since, results) }()
	for {
		select {
		case r := <-results:
			apply(r)
		case err := <-errc:
			// WatchLeases sends synchronously, so nothing is left in results.
			return err
		}
	}
}

// Release deletes our lease and frees its registry lease, for
// --release-on-exit (by default a stopping host keeps its lease, as
// flanneld does, to get the same subnet back). Call it after Run returned.
func (m *Manager) Release(ctx context.Context) error {
	l, ok := m.Lease()
	if !ok {
		return nil
	}
	if err := m.reg.DeleteLease(ctx, l.Subnet, m.opts.PublicIP); err != nil {
		return fmt.Errorf("release lease %s: %w", l.Subnet, err)
	}
	m.setLease(Lease{}, false)
	return nil
}
