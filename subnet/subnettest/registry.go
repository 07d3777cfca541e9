// Package subnettest provides an in-memory subnet.Registry for tests: the
// semantics of the etcd registry (revisions, create-if-absent, watches that
// resume and resync after compaction) without etcd, plus knobs to break it.
package subnettest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/overlayd/overlayd/subnet"
)

// ErrBroken is what watches return when Break cuts them.
var ErrBroken = errors.New("subnettest: watch broken")

// Registry is an in-memory subnet.Registry. Leases never expire by
// themselves: Expire stands in for the TTL running out. It is safe for
// concurrent use.
type Registry struct {
	mu        sync.Mutex
	cfg       *subnet.Config
	rev       int64
	leases    map[netip.Prefix]entry
	history   []change // every change after compacted
	compacted int64    // revisions below this are gone from history
	failure   error    // when set, every call fails with it
	changed   chan struct{}
	broken    chan struct{}
	nextID    int64
}

type entry struct {
	lease   subnet.Lease
	leaseID int64 // 0 for a reservation
}

type change struct {
	rev int64
	ev  subnet.Event
}

var _ subnet.Registry = (*Registry)(nil)

// New returns a registry holding cfg (nil: no config yet).
func New(cfg *subnet.Config) *Registry {
	return &Registry{
		cfg:     cfg,
		rev:     1,
		leases:  make(map[netip.Prefix]entry),
		changed: make(chan struct{}),
		broken:  make(chan struct{}),
	}
}

// SetConfig replaces the network config.
func (r *Registry) SetConfig(cfg *subnet.Config) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cfg = cfg
}

// Fail makes every call fail with err until Fail(nil), and breaks the
// running watches: the registry is unreachable.
func (r *Registry) Fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failure = err
	if err != nil {
		r.breakLocked()
	}
}

// Break makes every running watch return ErrBroken, as a lost connection does.
func (r *Registry) Break() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.breakLocked()
}

func (r *Registry) breakLocked() {
	close(r.broken)
	r.broken = make(chan struct{})
}

// Compact forgets all history: watches from older revisions resync.
func (r *Registry) Compact() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.compacted = r.rev + 1
	r.history = nil
}

// Put writes a lease as a raw etcdctl put would: no TTL, replacing any.
func (r *Registry) Put(l subnet.Lease) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l.Expiration = time.Time{}
	r.putLocked(entry{lease: l})
}

// Expire removes the lease for sn as if its TTL ran out (or it was
// deleted or revoked), and reports whether there was one.
func (r *Registry) Expire(sn netip.Prefix) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.deleteLocked(sn)
}

// LeaseID returns the id of the registry lease holding sn's lease, 0 for
// none: tests check that renewals keep it.
func (r *Registry) LeaseID(sn netip.Prefix) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leases[sn].leaseID
}

// Leases returns the stored leases, ordered by subnet.
func (r *Registry) Leases() []subnet.Lease {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.listLocked()
}

func (r *Registry) listLocked() []subnet.Lease {
	out := make([]subnet.Lease, 0, len(r.leases))
	for _, e := range r.leases {
		out = append(out, e.lease)
	}
	slices.SortFunc(out, func(a, b subnet.Lease) int { return a.Subnet.Compare(b.Subnet) })
	return out
}

// snapshotLocked lists the leases as others see them: no Expiration.
func (r *Registry) snapshotLocked() []subnet.Lease {
	leases := r.listLocked()
	for i := range leases {
		leases[i].Expiration = time.Time{}
	}
	return leases
}

func (r *Registry) commitLocked(ev subnet.Event) {
	r.rev++
	ev.Lease.Expiration = time.Time{} // watchers never see it, as with etcd
	r.history = append(r.history, change{rev: r.rev, ev: ev})
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Registry) putLocked(e entry) {
	r.leases[e.lease.Subnet] = e
	r.commitLocked(subnet.Event{Type: subnet.EventAdded, Lease: e.lease})
}

func (r *Registry) deleteLocked(sn netip.Prefix) bool {
	if _, ok := r.leases[sn]; !ok {
		return false
	}
	delete(r.leases, sn)
	r.commitLocked(subnet.Event{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: sn}})
	return true
}

// GetConfig implements subnet.Registry.
func (r *Registry) GetConfig(ctx context.Context) (*subnet.Config, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failure != nil {
		return nil, r.failure
	}
	if r.cfg == nil {
		return nil, subnet.ErrConfigNotFound
	}
	c := *r.cfg
	return &c, nil
}

// ListLeases implements subnet.Registry.
func (r *Registry) ListLeases(ctx context.Context) ([]subnet.Lease, int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failure != nil {
		return nil, 0, r.failure
	}
	return r.snapshotLocked(), r.rev, nil
}

// CreateLease implements subnet.Registry.
func (r *Registry) CreateLease(ctx context.Context, sn netip.Prefix, attrs subnet.LeaseAttrs, ttl time.Duration) (subnet.Lease, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failure != nil {
		return subnet.Lease{}, r.failure
	}
	if _, ok := r.leases[sn]; ok {
		return subnet.Lease{}, fmt.Errorf("lease %s: %w", sn, subnet.ErrLeaseExists)
	}
	r.nextID++
	l := subnet.Lease{Subnet: sn, Attrs: attrs, Expiration: time.Now().Add(ttl)}
	r.putLocked(entry{lease: l, leaseID: r.nextID})
	return l, nil
}

// RenewLease implements subnet.Registry: the registry lease id stays.
func (r *Registry) RenewLease(ctx context.Context, sn netip.Prefix, attrs subnet.LeaseAttrs, ttl time.Duration) (subnet.Lease, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failure != nil {
		return subnet.Lease{}, r.failure
	}
	e, ok := r.leases[sn]
	if !ok {
		return subnet.Lease{}, fmt.Errorf("lease %s: %w", sn, subnet.ErrLeaseNotFound)
	}
	if e.lease.Attrs.PublicIP != attrs.PublicIP {
		return subnet.Lease{}, fmt.Errorf("lease %s: %w: it has PublicIP %s", sn, subnet.ErrLeaseTaken, e.lease.Attrs.PublicIP)
	}
	old := e.lease.Attrs
	e.lease.Attrs = attrs
	if e.leaseID != 0 {
		e.lease.Expiration = time.Now().Add(ttl)
	}
	if old.Equal(attrs) {
		r.leases[sn] = e // a keep-alive: no event
	} else {
		r.putLocked(e)
	}
	return e.lease, nil
}

// DeleteLease implements subnet.Registry.
func (r *Registry) DeleteLease(ctx context.Context, sn netip.Prefix, owner netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failure != nil {
		return r.failure
	}
	if e, ok := r.leases[sn]; ok && owner.IsValid() && e.lease.Attrs.PublicIP != owner {
		return fmt.Errorf("lease %s: not deleted: %w: it has PublicIP %s", sn, subnet.ErrLeaseTaken, e.lease.Attrs.PublicIP)
	}
	r.deleteLocked(sn)
	return nil
}

// WatchLeases implements subnet.Registry, one result per revision.
func (r *Registry) WatchLeases(ctx context.Context, since int64, out chan<- subnet.WatchResult) error {
	for {
		r.mu.Lock()
		if r.failure != nil {
			r.mu.Unlock()
			return r.failure
		}
		var res subnet.WatchResult
		pending := false
		switch {
		case since < r.compacted:
			res = subnet.WatchResult{Revision: r.rev, Resync: true, Leases: r.snapshotLocked()}
			pending = true
		default:
			for _, c := range r.history {
				if c.rev >= since {
					res = subnet.WatchResult{Revision: c.rev, Events: []subnet.Event{c.ev}}
					pending = true
					break
				}
			}
		}
		changed, broken := r.changed, r.broken
		r.mu.Unlock()

		if pending {
			select {
			case out <- res:
				since = res.Revision + 1
			case <-ctx.Done():
				return ctx.Err()
			case <-broken:
				return ErrBroken
			}
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-broken:
			return ErrBroken
		}
	}
}
