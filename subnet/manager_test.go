package subnet_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/overlayd/overlayd/subnet"
	"github.com/overlayd/overlayd/subnet/subnettest"
)

var errUnreachable = errors.New("registry unreachable")

func mustConfig(t *testing.T, js string) *subnet.Config {
	t.Helper()
	c, err := subnet.ParseConfig([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pub(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(i)}) }

func opts(i int) subnet.ManagerOptions {
	return subnet.ManagerOptions{PublicIP: pub(i), BackendType: "vxlan", BackendData: json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":"02:00:00:00:00:%02x"}`, i))}
}

func other(sn string, i int) subnet.Lease {
	return subnet.Lease{Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{PublicIP: pub(i)}}
}

// waitFor polls cond until it holds; the deadline only stops a hung test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func find(reg *subnettest.Registry, sn netip.Prefix) (subnet.Lease, bool) {
	for _, l := range reg.Leases() {
		if l.Subnet == sn {
			return l, true
		}
	}
	return subnet.Lease{}, false
}

const net16 = `{"Network":"100.96.0.0/16"}`

func TestAcquireNew(t *testing.T) {
	cfg := mustConfig(t, net16)
	reg := subnettest.New(cfg)
	m := subnet.NewManager(reg, cfg, opts(1))
	l, err := m.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Compatible(l.Subnet) {
		t.Errorf("leased %v outside the config's range", l.Subnet)
	}
	if time.Until(l.Expiration) < 23*time.Hour {
		t.Errorf("Expiration %v, want the 24h default TTL", l.Expiration)
	}
	stored, ok := find(reg, l.Subnet)
	if !ok || !stored.Attrs.Equal(attrsOf(opts(1))) {
		t.Errorf("registry holds %+v, want our attrs", stored)
	}
	if got, held := m.Lease(); !held || got.Subnet != l.Subnet {
		t.Errorf("Lease() = %v, %v", got, held)
	}
}

func attrsOf(o subnet.ManagerOptions) subnet.LeaseAttrs {
	return subnet.LeaseAttrs{PublicIP: o.PublicIP, BackendType: o.BackendType, BackendData: o.BackendData}
}

func TestAcquireReusesLeaseOfOurPublicIP(t *testing.T) {
	cfg := mustConfig(t, net16)
	reg := subnettest.New(cfg)
	// flanneld's udp lease for our IP, without a TTL (a reservation).
	reg.Put(other("100.96.7.0/24", 1))
	reg.Put(other("100.96.8.0/24", 2))
	o := opts(1)
	o.PreviousSubnet = netip.MustParsePrefix("100.96.9.0/24") // step 1 comes first
	m := subnet.NewManager(reg, cfg, o)
	l, err := m.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet != netip.MustParsePrefix("100.96.7.0/24") {
		t.Fatalf("leased %v, want the lease of our IP, 100.96.7.0/24", l.Subnet)
	}
	if !l.Expiration.IsZero() {
		t.Errorf("a reservation got Expiration %v", l.Expiration)
	}
	if stored, _ := find(reg, l.Subnet); stored.Attrs.BackendType != "vxlan" {
		t.Errorf("attrs not rewritten: %+v", stored.Attrs)
	}
	if len(reg.Leases()) != 2 {
		t.Errorf("registry holds %d leases, want 2", len(reg.Leases()))
	}
}

func TestAcquireDeletesIncompatibleLeaseOfOurPublicIP(t *testing.T) {
	cfg := mustConfig(t, `{"Network":"100.96.0.0/16","SubnetMin":"100.96.10.0","SubnetMax":"100.96.20.0"}`)
	reg := subnettest.New(cfg)
	reg.Put(other("100.96.7.0/24", 1))  // below SubnetMin
	reg.Put(other("100.96.12.0/25", 1)) // wrong length
	m := subnet.NewManager(reg, cfg, opts(1))
	l, err := m.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Compatible(l.Subnet) {
		t.Errorf("leased %v", l.Subnet)
	}
	if got := reg.Leases(); len(got) != 1 || got[0].Subnet != l.Subnet {
		t.Errorf("registry holds %v, want only our new lease", got)
	}
}

func TestAcquirePreviousSubnet(t *testing.T) {
	cfg := mustConfig(t, net16)
	prev := netip.MustParsePrefix("100.96.42.0/24")
	tests := []struct {
		name     string
		existing []subnet.Lease
		prev     netip.Prefix
		wantPrev bool
	}{
		{"free", []subnet.Lease{other("100.96.1.0/24", 2)}, prev, true},
		{"taken by another host", []subnet.Lease{other("100.96.42.0/24", 2)}, prev, false},
		{"overlapped by another host's larger lease", []subnet.Lease{other("100.96.40.0/22", 2)}, prev, false},
		{"outside the range", nil, netip.MustParsePrefix("100.96.0.0/24"), false},
		{"wrong length", nil, netip.MustParsePrefix("100.96.42.0/25"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := subnettest.New(cfg)
			for _, l := range tt.existing {
				reg.Put(l)
			}
			o := opts(1)
			o.PreviousSubnet = tt.prev
			l, err := subnet.NewManager(reg, cfg, o).Acquire(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got := l.Subnet == tt.prev; got != tt.wantPrev {
				t.Errorf("leased %v; want previous subnet %v: %v", l.Subnet, tt.prev, tt.wantPrev)
			}
			if !cfg.Compatible(l.Subnet) {
				t.Errorf("leased %v outside the range", l.Subnet)
			}
			for _, e := range tt.existing {
				if e.Subnet.Overlaps(l.Subnet) {
					t.Errorf("leased %v overlaps %v", l.Subnet, e.Subnet)
				}
			}
		})
	}
}

func TestAcquireNoFreeSubnet(t *testing.T) {
	// A /28 holds four /30s; the first is skipped, so three are leasable.
	cfg := mustConfig(t, `{"Network":"100.96.0.0/28"}`)
	reg := subnettest.New(cfg)
	for i, sn := range []string{"100.96.0.4/30", "100.96.0.8/30", "100.96.0.12/30"} {
		reg.Put(other(sn, 10+i))
	}
	_, err := subnet.NewManager(reg, cfg, opts(1)).Acquire(context.Background())
	if !errors.Is(err, subnet.ErrNoFreeSubnet) {
		t.Fatalf("err = %v, want ErrNoFreeSubnet", err)
	}
	nf, ok := errors.AsType[*subnet.NoFreeSubnetError](err)
	if !ok || nf.Min != netip.MustParseAddr("100.96.0.4") || nf.Max != netip.MustParseAddr("100.96.0.12") || nf.SubnetLen != 30 {
		t.Errorf("error %#v does not name the range", nf)
	}
	if !strings.Contains(err.Error(), "between SubnetMin 100.96.0.4 and SubnetMax 100.96.0.12") {
		t.Errorf("message %q does not name the range", err)
	}
}

func TestAcquireRejectsBadPublicIP(t *testing.T) {
	cfg := mustConfig(t, net16)
	o := opts(1)
	o.PublicIP = netip.Addr{}
	if _, err := subnet.NewManager(subnettest.New(cfg), cfg, o).Acquire(context.Background()); err == nil {
		t.Error("Acquire without a PublicIP succeeded")
	}
}

func TestAcquireConcurrentGetsDistinctSubnets(t *testing.T) {
	// 8 free subnets for 8 hosts: they must collide and retry.
	cfg := mustConfig(t, `{"Network":"100.96.0.0/16","SubnetMin":"100.96.1.0","SubnetMax":"100.96.8.0"}`)
	reg := subnettest.New(cfg)
	got := make([]netip.Prefix, 8)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			l, err := subnet.NewManager(reg, cfg, opts(i+1)).Acquire(context.Background())
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
			t.Errorf("subnet %v leased twice: %v", sn, got)
		}
		seen[sn] = true
	}
}

func TestAcquireFailsWhenRegistryUnreachable(t *testing.T) {
	cfg := mustConfig(t, net16)
	reg := subnettest.New(cfg)
	reg.Fail(errUnreachable)
	_, err := subnet.NewManager(reg, cfg, opts(1)).Acquire(context.Background())
	if !errors.Is(err, errUnreachable) {
		t.Errorf("err = %v, want it to wrap the registry's error", err)
	}
}

// startRun acquires and runs a manager until the test ends.
func startRun(t *testing.T, reg *subnettest.Registry, cfg *subnet.Config, o subnet.ManagerOptions) (*subnet.Manager, subnet.Lease, <-chan error) {
	t.Helper()
	m := subnet.NewManager(reg, cfg, o)
	l, err := m.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done <- m.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
	})
	return m, l, done
}

func TestRunTakesDeletedLeaseBack(t *testing.T) {
	cfg := mustConfig(t, net16)
	reg := subnettest.New(cfg)
	_, l, done := startRun(t, reg, cfg, opts(1))
	for round := range 3 {
		before := reg.LeaseID(l.Subnet)
		if !reg.Expire(l.Subnet) {
			t.Fatalf("round %d: our lease is missing", round)
		}
		waitFor(t, "the lease to come back", func() bool {
			back, ok := find(reg, l.Subnet)
			return ok && back.Attrs.PublicIP == pub(1)
		})
		if reg.LeaseID(l.Subnet) == before {
			t.Errorf("round %d: retaken lease has the old registry lease id", round)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned %v", err)
	default:
	}
}

func TestRunKeepsGoingWhileRegistryIsDown(t *testing.T) {
	cfg := mustConfig(t, net16)
	reg := subnettest.New(cfg)
	_, l, done := startRun(t, reg, cfg, opts(1))
	reg.Fail(errUnreachable)
	reg.Expire(l.Subnet) // expires while we cannot see it
	reg.Compact()        // and the history is gone by the time we are back
	select {
	case err := <-done:
		t.Fatalf("Run returned %v while the registry was down", err)
	default:
	}
	reg.Fail(nil)
	waitFor(t, "the lease to come back", func() bool { _, ok := find(reg, l.Subnet); return ok })
}

func TestRunReportsLeaseTaken(t *testing.T) {
	cfg := mustConfig(t, net16)
	reg := subnettest.New(cfg)
	m, l, done := startRun(t, reg, cfg, opts(1))
	reg.Fail(errUnreachable)
	reg.Expire(l.Subnet)
	reg.Put(subnet.Lease{Subnet: l.Subnet, Attrs: subnet.LeaseAttrs{PublicIP: pub(2)}})
	reg.Fail(nil)
	var err error
	waitFor(t, "Run to return", func() bool {
		select {
		case err = <-done:
			return true
		default:
			return false
		}
	})
	if !errors.Is(err, subnet.ErrLeaseTaken) {
		t.Fatalf("Run returned %v, want ErrLeaseTaken", err)
	}
	if _, held := m.Lease(); held {
		t.Error("Lease() still reports the taken lease as held")
	}
	if err := m.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if back, _ := find(reg, l.Subnet); back.Attrs.PublicIP != pub(2) {
		t.Error("Release deleted the other host's lease")
	}
}

func TestRunRenewsKeepingTheRegistryLease(t *testing.T) {
	cfg := mustConfig(t, net16)
	reg := subnettest.New(cfg)
	o := opts(1)
	o.TTL, o.RenewMargin = 2*time.Second, time.Second
	m, l, _ := startRun(t, reg, cfg, o)
	id := reg.LeaseID(l.Subnet)
	waitFor(t, "a renewal", func() bool {
		cur, _ := m.Lease()
		return cur.Expiration.After(l.Expiration)
	})
	if got := reg.LeaseID(l.Subnet); got != id {
		t.Errorf("renewal changed the registry lease from %d to %d", id, got)
	}
}

func TestRelease(t *testing.T) {
	cfg := mustConfig(t, net16)
	reg := subnettest.New(cfg)
	m := subnet.NewManager(reg, cfg, opts(1))
	if err := m.Release(context.Background()); err != nil {
		t.Errorf("Release before Acquire: %v", err)
	}
	l, err := m.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := find(reg, l.Subnet); ok {
		t.Error("lease still in the registry after Release")
	}
}

// TestReleaseLeavesAnotherHostsLease: our lease expired and another host
// took the subnet before we stopped; --release-on-exit must not delete
// their lease.
func TestReleaseLeavesAnotherHostsLease(t *testing.T) {
	cfg := mustConfig(t, net16)
	reg := subnettest.New(cfg)
	m := subnet.NewManager(reg, cfg, opts(1))
	l, err := m.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	reg.Expire(l.Subnet)
	reg.Put(subnet.Lease{Subnet: l.Subnet, Attrs: subnet.LeaseAttrs{PublicIP: pub(2)}})
	if err := m.Release(context.Background()); !errors.Is(err, subnet.ErrLeaseTaken) {
		t.Errorf("Release: %v, want ErrLeaseTaken", err)
	}
	if back, ok := find(reg, l.Subnet); !ok || back.Attrs.PublicIP != pub(2) {
		t.Error("Release deleted the other host's lease")
	}
}

// peerWatch runs WatchPeers and records every set it reports.
type peerWatch struct {
	mu    sync.Mutex
	calls [][]subnet.Lease
}

func (p *peerWatch) last() ([]subnet.Lease, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.calls) == 0 {
		return nil, 0
	}
	return p.calls[len(p.calls)-1], len(p.calls)
}

func (p *peerWatch) has(want ...string) func() bool {
	return func() bool {
		set, n := p.last()
		if n == 0 || len(set) != len(want) {
			return false
		}
		for i, l := range set {
			if l.Subnet.String()+"@"+l.Attrs.PublicIP.String() != want[i] {
				return false
			}
		}
		return true
	}
}

func watchPeers(t *testing.T, m *subnet.Manager) *peerWatch {
	p := &peerWatch{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- m.WatchPeers(ctx, func(set []subnet.Lease) {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.calls = append(p.calls, set)
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("WatchPeers returned %v", err)
		}
	})
	return p
}

func TestWatchPeers(t *testing.T) {
	cfg := mustConfig(t, net16)
	reg := subnettest.New(cfg)
	o := opts(1)
	o.PreviousSubnet = netip.MustParsePrefix("100.96.1.0/24")
	m := subnet.NewManager(reg, cfg, o)
	if _, err := m.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	p := watchPeers(t, m)
	waitFor(t, "the first, empty set", p.has())

	reg.Put(other("100.96.2.0/24", 2))
	reg.Put(other("100.96.3.0/24", 3))
	waitFor(t, "two peers", p.has("100.96.2.0/24@198.18.0.2", "100.96.3.0/24@198.18.0.3"))

	reg.Expire(netip.MustParsePrefix("100.96.2.0/24"))
	waitFor(t, "a removal", p.has("100.96.3.0/24@198.18.0.3"))

	// A broken watch resumes without missing what happened meanwhile.
	reg.Fail(errUnreachable)
	reg.Put(other("100.96.4.0/24", 4))
	reg.Fail(nil)
	waitFor(t, "the change made while broken", p.has("100.96.3.0/24@198.18.0.3", "100.96.4.0/24@198.18.0.4"))

	// Fallen behind compaction: re-listed.
	reg.Fail(errUnreachable)
	reg.Expire(netip.MustParsePrefix("100.96.3.0/24"))
	reg.Put(other("100.96.5.0/24", 5))
	reg.Compact()
	reg.Fail(nil)
	waitFor(t, "the set after compaction", p.has("100.96.4.0/24@198.18.0.4", "100.96.5.0/24@198.18.0.5"))

	// A renewal that changes nothing is not reported.
	_, n := p.last()
	reg.Put(other("100.96.4.0/24", 4))
	reg.Put(other("100.96.6.0/24", 6))
	waitFor(t, "the next change", p.has("100.96.4.0/24@198.18.0.4", "100.96.5.0/24@198.18.0.5", "100.96.6.0/24@198.18.0.6"))
	if _, n2 := p.last(); n2 != n+1 {
		t.Errorf("%d calls for one change", n2-n)
	}
}
