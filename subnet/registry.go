package subnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Registry is where leases live: flannel's etcd schema in production
// (package subnet/etcd), an in-memory map in tests (subnet/subnettest).
// It is mechanism only; Manager holds the policy (which subnet, when to
// renew, what to do when a lease is lost).
//
// Every method may fail with a transient error (etcd unreachable, context
// deadline): callers retry. The errors below are the definite answers.
type Registry interface {
	// GetConfig returns the network config, or an error matching
	// ErrConfigNotFound when none is stored, or ErrInvalidConfig.
	GetConfig(ctx context.Context) (*Config, error)

	// ListLeases returns every lease and the registry revision they were
	// read at; a watch from that revision + 1 misses nothing after them.
	ListLeases(ctx context.Context) ([]Lease, int64, error)

	// CreateLease stores a lease for sn if, and only if, none exists
	// (otherwise ErrLeaseExists), attached to a new registry lease of ttl.
	CreateLease(ctx context.Context, sn netip.Prefix, attrs LeaseAttrs, ttl time.Duration) (Lease, error)

	// RenewLease makes the existing lease for sn carry attrs and live
	// another ttl, keeping its registry lease (a keep-alive, not a new
	// grant): peers see a change only when attrs differ. A lease without a
	// TTL (a reservation) stays one. ErrLeaseNotFound when sn has no lease,
	// ErrLeaseTaken when it carries another PublicIP than attrs (left as
	// it is); one whose value cannot be read is rewritten with attrs.
	RenewLease(ctx context.Context, sn netip.Prefix, attrs LeaseAttrs, ttl time.Duration) (Lease, error)

	// DeleteLease removes the lease for sn and frees its registry lease,
	// only while it carries owner as its PublicIP (ErrLeaseTaken
	// otherwise), or whatever it holds when owner is the zero Addr.
	// Deleting a lease that does not exist is not an error.
	DeleteLease(ctx context.Context, sn netip.Prefix, owner netip.Addr) error

	// WatchLeases sends the changes made at revision since and later to
	// out until ctx is done or the watch breaks, and returns why (ctx.Err()
	// when ctx is done); the caller resumes from the last Revision + 1.
	// When since is too old (compacted away) it sends a Resync with the
	// complete set and carries on. It never closes out.
	WatchLeases(ctx context.Context, since int64, out chan<- WatchResult) error
}

var (
	// ErrConfigNotFound means the registry holds no network config yet;
	// flanneld waits for one, and so should callers.
	ErrConfigNotFound = errors.New("network config not found")
	// ErrLeaseExists means another lease holds the subnet.
	ErrLeaseExists = errors.New("subnet lease already exists")
	// ErrLeaseNotFound means the subnet has no lease (deleted or expired).
	ErrLeaseNotFound = errors.New("subnet lease not found")
	// ErrNoFreeSubnet matches *NoFreeSubnetError.
	ErrNoFreeSubnet = errors.New("no free subnet")
	// ErrLeaseTaken means our subnet was deleted and then leased by another
	// host before we could take it back: the local host must pick a new
	// subnet, which means restarting its containers' networking.
	ErrLeaseTaken = errors.New("subnet lease taken by another host")
)

// NoFreeSubnetError says every subnet of the config's range is leased.
type NoFreeSubnetError struct {
	Min, Max  netip.Addr
	SubnetLen int
	Leases    int // leases in the registry when we looked
}

func (e *NoFreeSubnetError) Error() string {
	return fmt.Sprintf("no free /%d subnet between SubnetMin %s and SubnetMax %s (%d leases exist); "+
		"widen the range or the Network in the network config, or delete stale leases",
		e.SubnetLen, e.Min, e.Max, e.Leases)
}

// Is makes errors.Is(err, ErrNoFreeSubnet) true.
func (e *NoFreeSubnetError) Is(target error) bool { return target == ErrNoFreeSubnet }
