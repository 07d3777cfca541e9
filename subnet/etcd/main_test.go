package etcd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/overlayd/overlayd/subnet"
)

// One embedded etcd serves the whole test binary; every test works under
// a prefix of its own, so tests run in parallel.
var testEndpoints []string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "overlayd-etcd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := StartEmbedded(ctx, EmbedOptions{
		DataDir:          dir,
		ListenClientURLs: []string{"http://127.0.0.1:0"},
		ListenPeerURL:    "http://127.0.0.1:0",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start embedded etcd:", err)
		return 1
	}
	defer e.Close()
	testEndpoints = e.Endpoints()
	return m.Run()
}

func testPrefix(t *testing.T) string {
	return "/overlayd-test/" + strings.ReplaceAll(t.Name(), "/", "_")
}

// newRegistry connects to the test etcd under the test's own prefix.
func newRegistry(t *testing.T, mod ...func(*Options)) *Registry {
	t.Helper()
	opts := Options{Endpoints: testEndpoints, Prefix: testPrefix(t)}
	for _, f := range mod {
		f(&opts)
	}
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r.cli.Delete(ctx, opts.Prefix+"/", clientv3.WithPrefix())
		r.Close()
	})
	return r
}

// newNetwork is a registry holding a network config.
func newNetwork(t *testing.T, config string, mod ...func(*Options)) (*Registry, *subnet.Config) {
	t.Helper()
	r := newRegistry(t, mod...)
	if err := r.PutConfig(context.Background(), []byte(config)); err != nil {
		t.Fatal(err)
	}
	cfg, err := r.GetConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return r, cfg
}

func pub(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(i)}) }

func managerOpts(i int) subnet.ManagerOptions {
	return subnet.ManagerOptions{PublicIP: pub(i)}
}

// waitFor polls cond until it holds; the deadline only stops a hung test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// get reads a raw key.
func (r *Registry) get(t *testing.T, key string) (*clientv3.GetResponse, bool) {
	t.Helper()
	resp, err := r.cli.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return resp, len(resp.Kvs) == 1
}

// running runs f(ctx) in a goroutine until the test ends.
func running(t *testing.T, f func(ctx context.Context) error) <-chan error {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done <- f(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
	})
	return done
}

// acquireAndRun has m acquire a lease and runs m.Run until the test
// ends; it returns the lease, its etcd key and Run's result.
func acquireAndRun(t *testing.T, m *subnet.Manager) (subnet.Lease, string, <-chan error) {
	t.Helper()
	l, err := m.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return l, testPrefix(t) + "/subnets/" + subnet.SubnetKey(l.Subnet), running(t, m.Run)
}

// stillRunning fails the test if Run has returned.
func stillRunning(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("Run returned %v", err)
	default:
	}
}

// peerSets records what WatchPeers reports.
type peerSets struct {
	mu   sync.Mutex
	last []subnet.Lease
	n    int
}

func (p *peerSets) set(ls []subnet.Lease) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last, p.n = ls, p.n+1
}

// is reports whether the last set holds exactly these subnet@PublicIP.
func (p *peerSets) is(want ...string) func() bool {
	return func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.n == 0 || len(p.last) != len(want) {
			return false
		}
		for i, l := range p.last {
			if l.Subnet.String()+"@"+l.Attrs.PublicIP.String() != want[i] {
				return false
			}
		}
		return true
	}
}

func (p *peerSets) get(sn netip.Prefix) (subnet.Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.last {
		if l.Subnet == sn {
			return l, true
		}
	}
	return subnet.Lease{}, false
}

// switchDialer dials etcd for real until it is switched off; then it
// refuses new connections and cuts the open ones: a network outage.
type switchDialer struct {
	mu    sync.Mutex
	off   bool
	conns []net.Conn
}

func (d *switchDialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.off {
		return nil, errors.New("switchDialer: network is down")
	}
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err == nil {
		d.conns = append(d.conns, c)
	}
	return c, err
}

func (d *switchDialer) setOff(off bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.off = off
	if off {
		for _, c := range d.conns {
			c.Close()
		}
		d.conns = nil
	}
}
