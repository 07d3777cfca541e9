package etcd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/overlayd/overlayd/subnet"
)

const net16 = `{"Network":"100.96.0.0/16","Backend":{"Type":"udp"}}`

func TestConfig(t *testing.T) {
	t.Parallel()
	r := newRegistry(t)
	ctx := context.Background()
	key := testPrefix(t) + "/config"

	_, err := r.GetConfig(ctx)
	if !errors.Is(err, subnet.ErrConfigNotFound) {
		t.Fatalf("GetConfig without config: %v, want ErrConfigNotFound", err)
	}
	if !strings.Contains(err.Error(), "etcdctl put "+key+" '") || !strings.Contains(err.Error(), "overlayd config put --etcd-endpoints ") {
		t.Errorf("error %q does not tell how to write the config", err)
	}

	// A typo is refused, with the field it was meant to be.
	err = r.PutConfig(ctx, []byte(`{"Network":"100.96.0.0/16","SubnetLne":26,"Backend":{"Type":"udp","Prot":8285}}`))
	if err == nil || !strings.Contains(err.Error(), `field "SubnetLne": unknown field; did you mean SubnetLen?`) ||
		!strings.Contains(err.Error(), `field "Backend.Prot": unknown field; did you mean Backend.Port?`) {
		t.Errorf("PutConfig(typos) = %v", err)
	}
	err = r.PutConfig(ctx, []byte(`{"Network":"100.96.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48"}`))
	if err == nil || !strings.Contains(err.Error(), `field "EnableIPv6": not supported by overlayd`) {
		t.Errorf("PutConfig(IPv6) = %v", err)
	}

	err = r.PutConfig(ctx, []byte(`{"Network":"100.96.0.0/16","SubnetLen":31}`))
	want := `network config ` + key + `: field "SubnetLen": 31 is larger than 30; use 24 for a /16 Network`
	if err == nil || err.Error() != want || !errors.Is(err, subnet.ErrInvalidConfig) {
		t.Errorf("PutConfig(bad) = %v\nwant %s", err, want)
	}
	if _, ok := r.get(t, key); ok {
		t.Error("PutConfig stored an invalid config")
	}

	// A config someone else wrote, broken: GetConfig names key and field.
	if _, err := r.cli.Put(ctx, key, `{"Network":"100.96.0.0/16","Backend":{"Type":"ipip"}}`); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetConfig(ctx); err == nil || !strings.HasPrefix(err.Error(), `network config `+key+`: field "Backend.Type"`) {
		t.Errorf("GetConfig(bad) = %v", err)
	}

	raw := `{"Network":"100.96.0.0/16","SubnetLen":26,"Backend":{"Type":"vxlan","VNI":4}}`
	if err := r.PutConfig(ctx, []byte(raw)); err != nil {
		t.Fatal(err)
	}
	if resp, _ := r.get(t, key); string(resp.Kvs[0].Value) != raw {
		t.Errorf("stored %s, want the bytes given", resp.Kvs[0].Value)
	}
	cfg, err := r.GetConfig(ctx)
	if err != nil || cfg.SubnetLen != 26 || cfg.Backend.VNI != 4 || cfg.Backend.Port != 8472 {
		t.Errorf("GetConfig = %+v, %v", cfg, err)
	}
}

func TestAcquireCreatesLeaseWithTTL(t *testing.T) {
	t.Parallel()
	r, cfg := newNetwork(t, net16)
	o := managerOpts(1)
	o.TTL = time.Hour
	l, err := subnet.NewManager(r, cfg, o).Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	key := testPrefix(t) + "/subnets/" + subnet.SubnetKey(l.Subnet)
	resp, ok := r.get(t, key)
	if !ok {
		t.Fatalf("no key %s", key)
	}
	kv := resp.Kvs[0]
	// Byte for byte what flanneld's udp backend writes.
	if want := `{"PublicIP":"198.18.0.1","PublicIPv6":null}`; string(kv.Value) != want {
		t.Errorf("lease value %s, want %s", kv.Value, want)
	}
	ttl, err := r.cli.TimeToLive(context.Background(), clientv3.LeaseID(kv.Lease), clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	if ttl.GrantedTTL != 3600 || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != key {
		t.Errorf("etcd lease: granted %ds, keys %q; want 3600s and only %s", ttl.GrantedTTL, ttl.Keys, key)
	}
	if time.Until(l.Expiration) < 50*time.Minute {
		t.Errorf("Expiration %v is not about an hour away", l.Expiration)
	}
}

func TestCreateLeaseExists(t *testing.T) {
	t.Parallel()
	r, _ := newNetwork(t, net16)
	ctx := context.Background()
	sn := netip.MustParsePrefix("100.96.5.0/24")
	if _, err := r.CreateLease(ctx, sn, subnet.LeaseAttrs{PublicIP: pub(1)}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateLease(ctx, sn, subnet.LeaseAttrs{PublicIP: pub(2)}, time.Hour); !errors.Is(err, subnet.ErrLeaseExists) {
		t.Fatalf("second CreateLease: %v, want ErrLeaseExists", err)
	}
	leases, _, err := r.ListLeases(ctx)
	if err != nil || len(leases) != 1 || leases[0].Attrs.PublicIP != pub(1) {
		t.Errorf("leases %+v, %v", leases, err)
	}
	if _, err := r.RenewLease(ctx, netip.MustParsePrefix("100.96.6.0/24"), subnet.LeaseAttrs{PublicIP: pub(1)}, time.Hour); !errors.Is(err, subnet.ErrLeaseNotFound) {
		t.Errorf("RenewLease of a missing lease: %v, want ErrLeaseNotFound", err)
	}
}

func TestConcurrentManagersGetDistinctSubnets(t *testing.T) {
	t.Parallel()
	// 10 subnets for 10 hosts: they collide and must retry.
	r, cfg := newNetwork(t, `{"Network":"100.96.0.0/16","SubnetMin":"100.96.1.0","SubnetMax":"100.96.10.0"}`)
	got := make([]netip.Prefix, 10)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			l, err := subnet.NewManager(r, cfg, managerOpts(i+1)).Acquire(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = l.Subnet
		})
	}
	wg.Wait()
	seen := map[netip.Prefix]bool{}
	for _, sn := range got {
		if seen[sn] {
			t.Errorf("%v leased twice: %v", sn, got)
		}
		seen[sn] = true
	}
	leases, _, _ := r.ListLeases(context.Background())
	if len(leases) != len(got) {
		t.Errorf("%d leases in etcd, want %d", len(leases), len(got))
	}
}

func leaseID(t *testing.T, r *Registry, sn netip.Prefix) clientv3.LeaseID {
	t.Helper()
	resp, ok := r.get(t, testPrefix(t)+"/subnets/"+subnet.SubnetKey(sn))
	if !ok {
		t.Fatalf("no lease for %v", sn)
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease)
}

func TestRestartGetsSameSubnetByPublicIP(t *testing.T) {
	t.Parallel()
	r, cfg := newNetwork(t, net16)
	ctx := context.Background()
	first, err := subnet.NewManager(r, cfg, managerOpts(1)).Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := leaseID(t, r, first.Subnet)

	// The restarted host changed backend data; its subnet file is gone.
	o := managerOpts(1)
	o.BackendType, o.BackendData = "vxlan", json.RawMessage(`{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}`)
	again, err := subnet.NewManager(r, cfg, o).Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again.Subnet != first.Subnet {
		t.Fatalf("restart got %v, want %v", again.Subnet, first.Subnet)
	}
	if got := leaseID(t, r, again.Subnet); got != id {
		t.Errorf("restart moved the key from etcd lease %x to %x; want the same one kept alive", id, got)
	}
	resp, _ := r.get(t, testPrefix(t)+"/subnets/"+subnet.SubnetKey(again.Subnet))
	if want := `{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}}`; string(resp.Kvs[0].Value) != want {
		t.Errorf("value %s, want %s", resp.Kvs[0].Value, want)
	}
}

func TestRestartGetsSameSubnetByPreviousSubnet(t *testing.T) {
	t.Parallel()
	r, cfg := newNetwork(t, net16)
	ctx := context.Background()
	m := subnet.NewManager(r, cfg, managerOpts(1))
	first, err := m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// The host comes back with a new IP; its subnet file names the subnet.
	file := filepath.Join(t.TempDir(), "subnet.env")
	if err := subnet.WriteSubnetFile(file, cfg.Network, first.Subnet, 1472, false); err != nil {
		t.Fatal(err)
	}
	prev, err := subnet.ReadSubnetFile(file)
	if err != nil {
		t.Fatal(err)
	}
	o := managerOpts(2)
	o.PreviousSubnet = prev
	again, err := subnet.NewManager(r, cfg, o).Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again.Subnet != first.Subnet {
		t.Errorf("got %v, want the previous subnet %v", again.Subnet, first.Subnet)
	}
}

func TestReleaseRevokesEtcdLease(t *testing.T) {
	t.Parallel()
	r, cfg := newNetwork(t, net16)
	ctx := context.Background()
	m := subnet.NewManager(r, cfg, managerOpts(1))
	l, err := m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := leaseID(t, r, l.Subnet)
	if err := m.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.get(t, testPrefix(t)+"/subnets/"+subnet.SubnetKey(l.Subnet)); ok {
		t.Error("key still there after Release")
	}
	ttl, err := r.cli.TimeToLive(ctx, id)
	if err != nil || ttl.TTL != -1 {
		t.Errorf("etcd lease %x after Release: TTL %v, %v; want revoked (-1)", id, ttl, err)
	}
}

// A lease written by flanneld, byte for byte, is a peer like any other.
func TestFlanneldLeasesAreSeenAsPeers(t *testing.T) {
	t.Parallel()
	r, cfg := newNetwork(t, net16)
	ctx := context.Background()
	m := subnet.NewManager(r, cfg, managerOpts(1))
	if _, err := m.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	var peers peerSets
	running(t, func(ctx context.Context) error { return m.WatchPeers(ctx, peers.set) })
	waitFor(t, "the first peer set", peers.is())

	dir := testPrefix(t) + "/subnets/"
	lease, err := r.cli.Grant(ctx, 86400)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.cli.Put(ctx, dir+"100.96.201.0-24", `{"PublicIP":"198.18.0.201","PublicIPv6":null}`, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.cli.Put(ctx, dir+"100.96.202.0-24", `{"PublicIP":"198.18.0.202","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"a6:d7:18:cf:e6:cb"}}`); err != nil {
		t.Fatal(err)
	}
	if _, err := r.cli.Put(ctx, dir+"100.96.203.0-24&fd00:100:0:cb::-64", `{"PublicIP":"198.18.0.203","PublicIPv6":"fd00::203"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := r.cli.Put(ctx, dir+"junk", `{}`); err != nil { // skipped, not fatal
		t.Fatal(err)
	}
	waitFor(t, "flanneld's leases", peers.is("100.96.201.0/24@198.18.0.201", "100.96.202.0/24@198.18.0.202", "100.96.203.0/24@198.18.0.203"))
	udp, _ := peers.get(netip.MustParsePrefix("100.96.201.0/24"))
	if udp.Attrs.Backend() != "udp" {
		t.Errorf("flanneld udp lease has backend %q, want udp", udp.Attrs.Backend())
	}
	vx, _ := peers.get(netip.MustParsePrefix("100.96.202.0/24"))
	if vx.Attrs.Backend() != "vxlan" || string(vx.Attrs.BackendData) != `{"VNI":1,"VtepMAC":"a6:d7:18:cf:e6:cb"}` {
		t.Errorf("flanneld vxlan lease parsed as %+v", vx.Attrs)
	}
}

func TestWatchPeersAddRemove(t *testing.T) {
	t.Parallel()
	r, cfg := newNetwork(t, net16)
	ctx := context.Background()
	var ms []*subnet.Manager
	for i := range 3 {
		m := subnet.NewManager(r, cfg, managerOpts(i+1))
		if _, err := m.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	var peers peerSets
	running(t, func(ctx context.Context) error { return ms[0].WatchPeers(ctx, peers.set) })
	l1, _ := ms[1].Lease()
	l2, _ := ms[2].Lease()
	want := []string{l1.Subnet.String() + "@198.18.0.2", l2.Subnet.String() + "@198.18.0.3"}
	if l2.Subnet.Addr().Less(l1.Subnet.Addr()) {
		want[0], want[1] = want[1], want[0]
	}
	waitFor(t, "the other two hosts", peers.is(want...))

	if err := ms[1].Release(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a removal", peers.is(l2.Subnet.String()+"@198.18.0.3"))

	m := subnet.NewManager(r, cfg, managerOpts(4))
	l4, err := m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an addition", func() bool { _, found := peers.get(l4.Subnet); return found })
}

// A lease rewritten with a value that cannot be read stops being a peer,
// as a re-list would leave it out, and comes back once it is readable.
func TestWatchPeersDropsUnreadableLease(t *testing.T) {
	t.Parallel()
	r, cfg := newNetwork(t, net16)
	ctx := context.Background()
	var ms []*subnet.Manager
	for i := range 2 {
		m := subnet.NewManager(r, cfg, managerOpts(i+1))
		if _, err := m.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	var peers peerSets
	running(t, func(ctx context.Context) error { return ms[0].WatchPeers(ctx, peers.set) })
	l1, _ := ms[1].Lease()
	peer := l1.Subnet.String() + "@198.18.0.2"
	waitFor(t, "the other host", peers.is(peer))

	key := testPrefix(t) + "/subnets/" + subnet.SubnetKey(l1.Subnet)
	resp, ok := r.get(t, key)
	if !ok {
		t.Fatalf("no key %s", key)
	}
	good := resp.Kvs[0].Value
	if _, err := r.cli.Put(ctx, key, `{"PublicIP":`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the unreadable lease to leave the peers", peers.is())
	if _, err := r.cli.Put(ctx, key, string(good)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rewritten lease to come back", peers.is(peer))
}

// The watch falls behind while the network is down, the history it needs
// is compacted away meanwhile, and the set is still right afterwards.
func TestWatchPeersRecoversFromCompaction(t *testing.T) {
	t.Parallel()
	var sw switchDialer
	var logs recordHandler
	watcherReg, cfg := newNetwork(t, net16, func(o *Options) {
		o.Dialer = sw.dial
		o.RequestTimeout = 2 * time.Second
		o.Logger = slog.New(&logs)
	})
	r := newRegistry(t) // the rest of the cluster, always connected
	ctx := context.Background()
	m := subnet.NewManager(watcherReg, cfg, managerOpts(1))
	if _, err := m.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	var peers peerSets
	running(t, func(ctx context.Context) error { return m.WatchPeers(ctx, peers.set) })
	put := func(sn string, i int) {
		t.Helper()
		if _, err := r.CreateLease(ctx, netip.MustParsePrefix(sn), subnet.LeaseAttrs{PublicIP: pub(i)}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	put("100.96.101.0/24", 101)
	put("100.96.102.0/24", 102)
	waitFor(t, "two peers", peers.is("100.96.101.0/24@198.18.0.101", "100.96.102.0/24@198.18.0.102"))

	sw.setOff(true)
	if err := r.DeleteLease(ctx, netip.MustParsePrefix("100.96.101.0/24"), netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	put("100.96.103.0/24", 103)
	resp, err := r.cli.Get(ctx, "compaction-point")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	sw.setOff(false)
	waitFor(t, "the set after compaction", peers.is("100.96.102.0/24@198.18.0.102", "100.96.103.0/24@198.18.0.103"))

	put("100.96.104.0/24", 104)
	waitFor(t, "watching again after the resync", peers.is("100.96.102.0/24@198.18.0.102", "100.96.103.0/24@198.18.0.103", "100.96.104.0/24@198.18.0.104"))
	if !logs.has("lease watch fell behind etcd compaction; re-listing") {
		t.Error("the watch never went through the compaction resync")
	}
}

// The registry-level resync: a watch from a compacted revision starts with
// the complete set, then carries on with deltas.
func TestWatchLeasesFromCompactedRevision(t *testing.T) {
	t.Parallel()
	r, _ := newNetwork(t, net16)
	ctx := context.Background()
	a, b := netip.MustParsePrefix("100.96.1.0/24"), netip.MustParsePrefix("100.96.2.0/24")
	if _, err := r.CreateLease(ctx, a, subnet.LeaseAttrs{PublicIP: pub(1)}, time.Hour); err != nil {
		t.Fatal(err)
	}
	_, since, err := r.ListLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteLease(ctx, a, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateLease(ctx, b, subnet.LeaseAttrs{PublicIP: pub(2)}, time.Hour); err != nil {
		t.Fatal(err)
	}
	_, now, _ := r.ListLeases(ctx)
	if _, err := r.cli.Compact(ctx, now); err != nil {
		t.Fatal(err)
	}

	out := make(chan subnet.WatchResult)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- r.WatchLeases(wctx, since+1, out) }()
	first := <-out
	if !first.Resync || len(first.Leases) != 1 || first.Leases[0].Subnet != b || first.Revision < now {
		t.Fatalf("first result %+v, want a resync holding only %v", first, b)
	}
	if err := r.DeleteLease(ctx, b, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	next := <-out
	if next.Resync || len(next.Events) != 1 || next.Events[0].Type != subnet.EventRemoved || next.Events[0].Lease.Subnet != b {
		t.Fatalf("next result %+v, want the removal of %v", next, b)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("WatchLeases returned %v, want context.Canceled", err)
	}
}

// A watch resuming from a revision etcd has not reached (etcd restored
// from a snapshot, or replaced by an empty one) starts again with the
// complete set, rather than waiting in silence for that revision.
func TestWatchLeasesFromRevisionAheadOfEtcd(t *testing.T) {
	t.Parallel()
	r, _ := newNetwork(t, net16)
	ctx := context.Background()
	a := netip.MustParsePrefix("100.96.1.0/24")
	if _, err := r.CreateLease(ctx, a, subnet.LeaseAttrs{PublicIP: pub(1)}, time.Hour); err != nil {
		t.Fatal(err)
	}
	_, now, err := r.ListLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan subnet.WatchResult)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- r.WatchLeases(wctx, now+1_000_000, out) }()
	next := func(what string) subnet.WatchResult {
		t.Helper()
		select {
		case res := <-out:
			return res
		case err := <-errc:
			t.Fatalf("WatchLeases returned %v before %s", err, what)
		case <-time.After(60 * time.Second): // a guard against a hang, not a timing
			t.Fatalf("no %s after 60 s", what)
		}
		return subnet.WatchResult{}
	}
	first := next("resync")
	if !first.Resync || len(first.Leases) != 1 || first.Leases[0].Subnet != a || first.Revision < now || first.Revision > now+1_000 {
		t.Fatalf("first result %+v, want a resync at etcd's revision holding only %v", first, a)
	}
	if err := r.DeleteLease(ctx, a, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if res := next("removal"); res.Resync || len(res.Events) != 1 || res.Events[0].Type != subnet.EventRemoved || res.Events[0].Lease.Subnet != a {
		t.Fatalf("next result %+v, want the removal of %v", res, a)
	}
}

// Renewal keeps alive the one etcd lease the key has; it never grants a new one.
func TestRenewalKeepsOneEtcdLease(t *testing.T) {
	t.Parallel()
	r, cfg := newNetwork(t, net16)
	o := managerOpts(1)
	o.TTL, o.RenewMargin = 10*time.Second, 8*time.Second // renew every ~2s, 8s to spare
	m := subnet.NewManager(r, cfg, o)
	l, err := m.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	id := leaseID(t, r, l.Subnet)
	running(t, m.Run)
	for renewal := range 2 {
		prev, _ := m.Lease()
		waitFor(t, "a renewal", func() bool {
			cur, _ := m.Lease()
			return cur.Expiration.After(prev.Expiration)
		})
		if got := leaseID(t, r, l.Subnet); got != id {
			t.Fatalf("renewal %d: key moved from etcd lease %x to %x", renewal, id, got)
		}
	}
	ttl, err := r.cli.TimeToLive(context.Background(), id)
	if err != nil || ttl.TTL <= 0 {
		t.Errorf("etcd lease %x: %+v, %v; want alive", id, ttl, err)
	}
}

func TestRunTakesDeletedLeaseBack(t *testing.T) {
	t.Parallel()
	r, cfg := newNetwork(t, net16)
	ctx := context.Background()
	m := subnet.NewManager(r, cfg, managerOpts(1))
	l, key, done := acquireAndRun(t, m)
	back := func(old clientv3.LeaseID) func() bool {
		return func() bool {
			resp, ok := r.get(t, key)
			return ok && clientv3.LeaseID(resp.Kvs[0].Lease) != old && strings.Contains(string(resp.Kvs[0].Value), `"198.18.0.1"`)
		}
	}

	// etcdctl del of our key
	id := leaseID(t, r, l.Subnet)
	if _, err := r.cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted key to come back", back(id))

	// etcdctl lease revoke of our etcd lease
	id = leaseID(t, r, l.Subnet)
	if _, err := r.cli.Revoke(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the revoked lease to come back", back(id))
	stillRunning(t, done)
	if cur, held := m.Lease(); !held || cur.Subnet != l.Subnet {
		t.Errorf("Lease() = %v, %v; want %v held", cur, held, l.Subnet)
	}
}

// Losing etcd stops nothing: Run keeps going and catches up afterwards.
func TestRunSurvivesLostConnection(t *testing.T) {
	t.Parallel()
	var sw switchDialer
	r, cfg := newNetwork(t, net16, func(o *Options) {
		o.Dialer = sw.dial
		o.RequestTimeout = time.Second
	})
	admin := newRegistry(t)
	ctx := context.Background()
	_, key, done := acquireAndRun(t, subnet.NewManager(r, cfg, managerOpts(1)))
	sw.setOff(true)
	if _, err := admin.cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	sw.setOff(false)
	waitFor(t, "the key to come back after the outage", func() bool { _, ok := admin.get(t, key); return ok })
	stillRunning(t, done)
}

func TestNewDoesNotBlockOnUnreachableEtcd(t *testing.T) {
	t.Parallel()
	// Port 1 on loopback: nothing listens there.
	r, err := New(Options{Endpoints: []string{"http://127.0.0.1:1"}, RequestTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer r.Close()
	_, err = r.GetConfig(context.Background())
	if err == nil || errors.Is(err, subnet.ErrConfigNotFound) {
		t.Errorf("GetConfig against no etcd: %v, want a connection error", err)
	}
	// It names the endpoint, the timeout, and what to check.
	for _, want := range []string{"etcd at http://127.0.0.1:1 did not answer within 300ms", "127.0.0.1:1: connect: connection refused", "check that etcd runs"} {
		if err != nil && !strings.Contains(err.Error(), want) {
			t.Errorf("GetConfig against no etcd: %q lacks %q", err, want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := r.ListLeases(ctx); err == nil {
		t.Error("ListLeases with a canceled context succeeded")
	}
}

// CheckReachable refuses at once an etcd that nothing listens for, saying
// what each endpoint said; one endpoint that takes a connection is enough.
func TestCheckReachable(t *testing.T) {
	t.Parallel()
	check := func(endpoints ...string) error {
		r, err := New(Options{Endpoints: endpoints})
		if err != nil {
			t.Fatalf("New(%q): %v", endpoints, err)
		}
		defer r.Close()
		return r.CheckReachable(context.Background())
	}
	err := check("http://127.0.0.1:1", "http://127.0.0.1:2")
	for _, want := range []string{"etcd at http://127.0.0.1:1,http://127.0.0.1:2 cannot be reached",
		"127.0.0.1:1: connect: connection refused", "127.0.0.1:2: connect: connection refused", "--etcd-endpoints"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("nothing listening: %v, want %q in it", err, want)
		}
	}
	if err := check(append([]string{"http://127.0.0.1:1"}, testEndpoints...)...); err != nil {
		t.Errorf("one endpoint listening: %v", err)
	}
	if err := check("unix:///nonexistent/etcd.sock"); err != nil {
		t.Errorf("an endpoint it cannot dial by itself counts as reachable: %v", err)
	}
	// Through Options.Dialer, as the etcd client dials (no packet leaves
	// here): a refusal is definite, a timeout is not.
	withDialer := func(dial func(context.Context, string) (net.Conn, error)) error {
		r, err := New(Options{Endpoints: []string{"http://198.18.0.254:2379"}, Dialer: dial})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		return r.CheckReachable(context.Background())
	}
	refuse := func(context.Context, string) (net.Conn, error) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	if err := withDialer(refuse); err == nil || !strings.Contains(err.Error(), "198.18.0.254:2379: connect: connection refused") {
		t.Errorf("the dialer refuses: %v", err)
	}
	accept := func(context.Context, string) (net.Conn, error) { c, _ := net.Pipe(); return c, nil }
	if err := withDialer(accept); err != nil {
		t.Errorf("the dialer connects: %v", err)
	}
	slow := func(ctx context.Context, _ string) (net.Conn, error) { <-ctx.Done(); return nil, ctx.Err() }
	if err := withDialer(slow); err != nil {
		t.Errorf("the dialer times out, which may pass for etcd's own client: %v", err)
	}
}

func TestNewOptionErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, cert, key := writeTestCert(t, dir)
	tests := []struct {
		opts Options
		want string
	}{
		{Options{CAFile: filepath.Join(dir, "missing.pem")}, "--etcd-cafile"},
		{Options{CAFile: key}, "--etcd-cafile " + key + ": no PEM certificate"},
		{Options{CertFile: cert}, "--etcd-certfile needs --etcd-keyfile"},
		{Options{KeyFile: key}, "--etcd-keyfile needs --etcd-certfile"},
		{Options{CertFile: ca, KeyFile: filepath.Join(dir, "missing.pem")}, "--etcd-keyfile"},
		{Options{CAFile: ca, Endpoints: []string{"http://127.0.0.1:2379"}}, "use https://"},
		{Options{Username: "root"}, "--etcd-password"},
	}
	for _, tt := range tests {
		_, err := New(tt.opts)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%+v) = %v, want an error containing %q", tt.opts, err, tt.want)
		}
	}
	r, err := New(Options{Endpoints: []string{"https://127.0.0.1:1"}, CAFile: ca, CertFile: cert, KeyFile: key})
	if err != nil {
		t.Fatalf("New with valid TLS files: %v", err)
	}
	r.Close()
}

// writeTestCert writes a self-signed CA certificate (used as client
// certificate too) and its key.
func writeTestCert(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "overlayd-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	ca, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca, ca, key
}

func TestZapToSlog(t *testing.T) {
	t.Parallel()
	var h recordHandler
	lg := newZapLogger(slog.New(&h)).Named("etcd")
	lg.Info("chatty", zap.String("k", "v"))
	lg.With(zap.Int("n", 7)).Warn("careful", zap.Error(errors.New("boom")))
	if len(h.records) != 2 {
		t.Fatalf("got %d records, want 2", len(h.records))
	}
	if r := h.records[0]; r.Level != slog.LevelDebug || r.Message != "chatty" || h.attrs[0]["k"] != "v" || h.attrs[0]["logger"] != "etcd" {
		t.Errorf("info record: %v %q %v; want Debug with k=v", r.Level, r.Message, h.attrs[0])
	}
	if r := h.records[1]; r.Level != slog.LevelWarn || h.attrs[1]["n"] != "7" || h.attrs[1]["error"] != "boom" {
		t.Errorf("warn record: %v %v", r.Level, h.attrs[1])
	}
	newZapLogger(nil).Error("to nowhere") // must not panic
}

// recordHandler keeps records, and their attributes as strings.
type recordHandler struct {
	mu      sync.Mutex
	records []slog.Record
	attrs   []map[string]string
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &withHandler{parent: h, attrs: as}
}
func (h *recordHandler) WithGroup(string) slog.Handler { return h }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	return h.handle(r, nil)
}

func (h *recordHandler) handle(r slog.Record, with []slog.Attr) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := map[string]string{}
	for _, a := range with {
		m[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
	h.records = append(h.records, r)
	h.attrs = append(h.attrs, m)
	return nil
}

func (h *recordHandler) has(msg string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.records {
		if r.Message == msg {
			return true
		}
	}
	return false
}

type withHandler struct {
	parent *recordHandler
	attrs  []slog.Attr
}

func (h *withHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *withHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &withHandler{parent: h.parent, attrs: append(h.attrs[:len(h.attrs):len(h.attrs)], as...)}
}
func (h *withHandler) WithGroup(string) slog.Handler { return h }
func (h *withHandler) Handle(_ context.Context, r slog.Record) error {
	return h.parent.handle(r, h.attrs)
}

// A key without an etcd lease is a reservation (flannel's docs): reusing it
// keeps it one, which flanneld v0.28 fails to do (flannel-io/flannel#1329).
func TestReservationIsKept(t *testing.T) {
	t.Parallel()
	r, cfg := newNetwork(t, net16)
	ctx := context.Background()
	key := testPrefix(t) + "/subnets/100.96.77.0-24"
	if _, err := r.cli.Put(ctx, key, `{"PublicIP":"198.18.0.1","PublicIPv6":null}`); err != nil {
		t.Fatal(err)
	}
	o := managerOpts(1)
	o.BackendType = "udp"
	l, err := subnet.NewManager(r, cfg, o).Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet != netip.MustParsePrefix("100.96.77.0/24") || !l.Expiration.IsZero() {
		t.Fatalf("got %v expiring %v; want the reservation, without expiry", l.Subnet, l.Expiration)
	}
	resp, _ := r.get(t, key)
	if kv := resp.Kvs[0]; kv.Lease != 0 || string(kv.Value) != `{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"udp"}` {
		t.Errorf("reservation now has etcd lease %x and value %s", kv.Lease, kv.Value)
	}
}

// A key of ours on an etcd lease shorter than our TTL moves to a new etcd
// lease of our TTL, and the old lease is revoked rather than orphaned.
func TestReuseMovesShortLease(t *testing.T) {
	t.Parallel()
	r, cfg := newNetwork(t, net16)
	ctx := context.Background()
	key := testPrefix(t) + "/subnets/100.96.78.0-24"
	short, err := r.cli.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.cli.Put(ctx, key, `{"PublicIP":"198.18.0.1","PublicIPv6":null}`, clientv3.WithLease(short.ID)); err != nil {
		t.Fatal(err)
	}
	l, err := subnet.NewManager(r, cfg, managerOpts(1)).Acquire(ctx) // 24h TTL
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet != netip.MustParsePrefix("100.96.78.0/24") {
		t.Fatalf("got %v", l.Subnet)
	}
	id := leaseID(t, r, l.Subnet)
	ttl, err := r.cli.TimeToLive(ctx, id)
	if err != nil || id == short.ID || ttl.GrantedTTL != 86400 {
		t.Errorf("key on etcd lease %x granted %v (%v); want a new 86400s lease", id, ttl.GrantedTTL, err)
	}
	if old, err := r.cli.TimeToLive(ctx, short.ID); err != nil || old.TTL != -1 {
		t.Errorf("old etcd lease: TTL %v, %v; want revoked", old.TTL, err)
	}
}

// ListLeasesExpiring says how long each lease has left; a reservation
// never expires.
func TestListLeasesExpiring(t *testing.T) {
	t.Parallel()
	r, cfg := newNetwork(t, net16)
	ctx := context.Background()
	o := managerOpts(1)
	o.TTL = time.Hour
	l, err := subnet.NewManager(r, cfg, o).Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reserved := netip.MustParsePrefix("100.96.77.0/24")
	if _, err := r.cli.Put(ctx, testPrefix(t)+"/subnets/100.96.77.0-24", `{"PublicIP":"198.18.0.9"}`); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	leases, err := r.ListLeasesExpiring(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 2 {
		t.Fatalf("%d leases, want 2", len(leases))
	}
	for _, got := range leases {
		switch got.Subnet {
		case l.Subnet:
			if left := got.Expiration.Sub(before); left <= 59*time.Minute || left > time.Hour+time.Minute {
				t.Errorf("lease %s expires in %s, want about 1h", got.Subnet, left)
			}
		case reserved:
			if !got.Expiration.IsZero() {
				t.Errorf("reservation expires at %v, want never", got.Expiration)
			}
		default:
			t.Errorf("unexpected lease %s", got.Subnet)
		}
	}
}
