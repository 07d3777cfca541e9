package e2e

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/overlayd/overlayd/perf/cluster"
)

// What every backend's cluster lives through: restarts, hosts leaving and
// joining.

// restart stops d and starts it again with extra flags, waiting until it
// and its peers are ready.
func restart(t *testing.T, d *cluster.Daemon, extra ...string) {
	t.Helper()
	ctx := context.Background()
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, extra...); err != nil {
		t.Fatal(err)
	}
	if err := d.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

// restartKeepsLease: a restarted host gets its subnet back, with the same
// VtepMAC, so the peers' neighbour and fdb entries stay valid.
func restartKeepsLease(t *testing.T, c *cluster.Cluster, d *cluster.Daemon, extra ...string) {
	t.Helper()
	before := leaseOf(t, c, d)
	restart(t, d, extra...)
	after := leaseOf(t, c, d)
	if after.Subnet != before.Subnet || d.Env.Subnet.Masked() != before.Subnet {
		t.Fatalf("restarted overlayd leased %s, had %s", after.Subnet, before.Subnet)
	}
	if string(after.Attrs.BackendData) != string(before.Attrs.BackendData) {
		t.Fatalf("restart changed BackendData from %s to %s", before.Attrs.BackendData, after.Attrs.BackendData)
	}
	waitFullMesh(t, c)
	pingAllPairs(t, c)
}

// leaveAndJoin: d leaves (--release-on-exit), every peer drops it, and it
// joins again.
func leaveAndJoin(t *testing.T, c *cluster.Cluster, d *cluster.Daemon) {
	t.Helper()
	ctx := context.Background()
	restart(t, d, "--release-on-exit")
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	left := time.Now()
	for _, o := range c.Daemons {
		if o == d {
			continue
		}
		var want []netip.Prefix
		for _, p := range c.Daemons {
			if p != o && p != d {
				want = append(want, p.Env.Subnet.Masked())
			}
		}
		if err := o.WaitPeers(ctx, 10*time.Second, want); err != nil {
			t.Fatalf("%s still lists the host that left: %v", o.Name(), err)
		}
	}
	t.Logf("%s left; every peer dropped it within %s", d.Name(), time.Since(left).Round(time.Millisecond))

	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	joined := time.Now()
	waitFullMesh(t, c)
	t.Logf("%s joined again with %s; every peer had it within %s", d.Name(), d.Env.Subnet, time.Since(joined).Round(time.Millisecond))
	pingAllPairs(t, c)
}
