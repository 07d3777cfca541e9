package etcd

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/overlayd/overlayd/subnet"
)

// TestRenewLeaseLeavesAnotherHostsLease: our lease expired and another
// host leased the subnet before our watch said so. Our renewal must not
// rewrite theirs (every peer would route their subnet to us): it says
// ErrLeaseTaken, and the key keeps their value and their etcd lease.
func TestRenewLeaseLeavesAnotherHostsLease(t *testing.T) {
	t.Parallel()
	r, _ := newNetwork(t, net16)
	ctx := context.Background()
	sn := netip.MustParsePrefix("100.96.9.0/24")
	if _, err := r.CreateLease(ctx, sn, subnet.LeaseAttrs{PublicIP: pub(2)}, time.Hour); err != nil {
		t.Fatal(err)
	}
	key := testPrefix(t) + "/subnets/" + subnet.SubnetKey(sn)
	before, _ := r.get(t, key)

	_, err := r.RenewLease(ctx, sn, subnet.LeaseAttrs{PublicIP: pub(1)}, time.Hour)
	if !errors.Is(err, subnet.ErrLeaseTaken) || !strings.Contains(err.Error(), "198.18.0.2") {
		t.Errorf("RenewLease of another host's lease: %v, want ErrLeaseTaken naming 198.18.0.2", err)
	}
	after, _ := r.get(t, key)
	if string(after.Kvs[0].Value) != string(before.Kvs[0].Value) || after.Kvs[0].Lease != before.Kvs[0].Lease {
		t.Errorf("key changed: %s (lease %x), was %s (lease %x)", after.Kvs[0].Value, after.Kvs[0].Lease, before.Kvs[0].Value, before.Kvs[0].Lease)
	}
}

// TestDeleteLeaseOnlyOwners: --release-on-exit deletes our lease, not the
// one another host took since; a zero owner deletes whatever is there.
func TestDeleteLeaseOnlyOwners(t *testing.T) {
	t.Parallel()
	r, _ := newNetwork(t, net16)
	ctx := context.Background()
	sn := netip.MustParsePrefix("100.96.10.0/24")
	if _, err := r.CreateLease(ctx, sn, subnet.LeaseAttrs{PublicIP: pub(2)}, time.Hour); err != nil {
		t.Fatal(err)
	}
	key := testPrefix(t) + "/subnets/" + subnet.SubnetKey(sn)
	if err := r.DeleteLease(ctx, sn, pub(1)); !errors.Is(err, subnet.ErrLeaseTaken) {
		t.Errorf("DeleteLease as 198.18.0.1 of 198.18.0.2's lease: %v, want ErrLeaseTaken", err)
	}
	if _, ok := r.get(t, key); !ok {
		t.Fatal("another host's lease was deleted")
	}
	if err := r.DeleteLease(ctx, sn, pub(2)); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.get(t, key); ok {
		t.Error("the owner's DeleteLease left the key")
	}
	if err := r.DeleteLease(ctx, sn, pub(2)); err != nil {
		t.Errorf("deleting a lease that is gone: %v, want nil", err)
	}
	if _, err := r.cli.Put(ctx, key, "garbage"); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteLease(ctx, sn, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.get(t, key); ok {
		t.Error("DeleteLease with no owner left an unreadable key")
	}
}

// TestAcquireSkipsUnreadableKeys: a subnet whose key holds a value nobody
// can read is taken. Acquire must not pick it for ever (the previous
// subnet), and a range full but for it has no free subnet.
func TestAcquireSkipsUnreadableKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("previous subnet", func(t *testing.T) {
		t.Parallel()
		r, cfg := newNetwork(t, net16)
		prev := netip.MustParsePrefix("100.96.5.0/24")
		if _, err := r.cli.Put(ctx, testPrefix(t)+"/subnets/"+subnet.SubnetKey(prev), `{"PublicIP":`); err != nil {
			t.Fatal(err)
		}
		o := managerOpts(1)
		o.PreviousSubnet = prev
		l, err := subnet.NewManager(r, cfg, o).Acquire(ctx)
		if err != nil || l.Subnet == prev {
			t.Errorf("Acquire = %v, %v; want another subnet than %v", l.Subnet, err, prev)
		}
	})
	t.Run("full range", func(t *testing.T) {
		t.Parallel()
		r, cfg := newNetwork(t, `{"Network":"100.96.0.0/28","SubnetLen":30,"Backend":{"Type":"udp"}}`)
		for i, sn := range []string{"100.96.0.4/30", "100.96.0.8/30"} {
			if _, err := r.CreateLease(ctx, netip.MustParsePrefix(sn), subnet.LeaseAttrs{PublicIP: pub(10 + i)}, time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := r.cli.Put(ctx, testPrefix(t)+"/subnets/100.96.0.12-30", "garbage"); err != nil {
			t.Fatal(err)
		}
		if _, err := subnet.NewManager(r, cfg, managerOpts(1)).Acquire(ctx); !errors.Is(err, subnet.ErrNoFreeSubnet) {
			t.Errorf("Acquire in a full range: %v, want ErrNoFreeSubnet", err)
		}
	})
}

// TestAcquireWithDualStackKeyOfOurs: a lease of ours under flanneld's
// dual-stack key (this host ran flanneld with EnableIPv6) is not one
// overlayd renews (it routes IPv4 only); Acquire takes another subnet
// instead of failing for ever.
func TestAcquireWithDualStackKeyOfOurs(t *testing.T) {
	t.Parallel()
	r, cfg := newNetwork(t, net16)
	ctx := context.Background()
	grant, err := r.cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	key := testPrefix(t) + "/subnets/100.96.7.0-24&fd00:1:0:7::-64"
	if _, err := r.cli.Put(ctx, key, `{"PublicIP":"198.18.0.1","PublicIPv6":"fd00::1"}`, clientv3.WithLease(grant.ID)); err != nil {
		t.Fatal(err)
	}
	l, err := subnet.NewManager(r, cfg, managerOpts(1)).Acquire(ctx)
	if err != nil || l.Subnet == netip.MustParsePrefix("100.96.7.0/24") {
		t.Errorf("Acquire = %v, %v; want another subnet", l.Subnet, err)
	}
}

// TestRunRepairsUnreadableOwnKey: garbage written over our key makes
// every peer drop our subnet; Run writes our lease back, as it does for a
// deleted one.
func TestRunRepairsUnreadableOwnKey(t *testing.T) {
	t.Parallel()
	r, cfg := newNetwork(t, net16)
	ctx := context.Background()
	_, key, done := acquireAndRun(t, subnet.NewManager(r, cfg, managerOpts(1)))
	if _, err := r.cli.Put(ctx, key, `{"PublicIP":`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "our key to be rewritten", func() bool {
		resp, ok := r.get(t, key)
		return ok && strings.Contains(string(resp.Kvs[0].Value), `"198.18.0.1"`) && resp.Kvs[0].Lease != 0
	})
	stillRunning(t, done)
}

// TestRunStopsWhenRenewalFindsSubnetTaken: the renewal itself finds
// another host's lease on our subnet (our watch has not told us yet):
// Run returns ErrLeaseTaken and leaves their lease as it is.
func TestRunStopsWhenRenewalFindsSubnetTaken(t *testing.T) {
	t.Parallel()
	r, cfg := newNetwork(t, net16)
	ctx := context.Background()
	o := managerOpts(1)
	o.TTL, o.RenewMargin = 3*time.Second, 2*time.Second // a renewal every second
	l, key, done := acquireAndRun(t, subnet.NewManager(&deaf{r}, cfg, o))
	if _, err := r.cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateLease(ctx, l.Subnet, subnet.LeaseAttrs{PublicIP: pub(2)}, time.Hour); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, subnet.ErrLeaseTaken) {
			t.Errorf("Run returned %v, want ErrLeaseTaken", err)
		}
	case <-time.After(60 * time.Second): // only stops a hung test: renewals come every second
		t.Fatal("Run goes on with our subnet leased by another host")
	}
	resp, _ := r.get(t, key)
	if !strings.Contains(string(resp.Kvs[0].Value), `"198.18.0.2"`) {
		t.Errorf("the other host's lease became %s", resp.Kvs[0].Value)
	}
}

// deaf is a Registry whose watches report nothing: a watch that has not
// caught up yet, so that only the renewal can see a change.
type deaf struct{ *Registry }

func (d *deaf) WatchLeases(ctx context.Context, _ int64, _ chan<- subnet.WatchResult) error {
	<-ctx.Done()
	return ctx.Err()
}
