package tunnel

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/overlayd/overlayd/tunnel/underlay/underlaytest"
)

// fakeFirewall records what the engine asks of Deps.Firewall.
type fakeFirewall struct {
	masq      bool
	ensureErr error

	mu      sync.Mutex
	ensured []netip.Prefix // network, subnet of each Ensure
	ingress []string       // and its ingress device
	removed int
}

func (f *fakeFirewall) Masquerades() bool { return f.masq }

func (f *fakeFirewall) Ensure(network, subnet netip.Prefix, ingress string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ensured = append(f.ensured, network, subnet)
	f.ingress = append(f.ingress, ingress)
	return 0, f.ensureErr
}

func (f *fakeFirewall) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed++
	return nil
}

// TestEngineFirewall: the rules are in place before the subnet file is
// written, which says FLANNEL_IPMASQ=true when they masquerade, and go with
// the lease on --release-on-exit.
func TestEngineFirewall(t *testing.T) {
	fw := &fakeFirewall{masq: true}
	e := startEngineWith(t, newPairRegistry(t), underlaytest.NewNetwork(), 1, t.TempDir(), fw)
	fw.mu.Lock()
	ensured := append([]netip.Prefix(nil), fw.ensured...)
	ingress := append([]string(nil), fw.ingress...)
	fw.mu.Unlock()
	if len(ensured) < 2 || ensured[0] != netip.MustParsePrefix("100.96.0.0/16") || ensured[1] != e.subnet.Masked() {
		t.Errorf("Ensure calls before ready: %v; want (100.96.0.0/16, %s)", ensured, e.subnet.Masked())
	}
	if len(ingress) < 1 || ingress[0] != "flannel0" {
		t.Errorf("Ensure's ingress devices: %q; want the TUN, flannel0", ingress)
	}
	data, err := os.ReadFile(e.subnetFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "FLANNEL_IPMASQ=true") {
		t.Errorf("subnet file:\n%s\nwant FLANNEL_IPMASQ=true", data)
	}
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	if fw.removed != 1 {
		t.Errorf("Remove called %d times on --release-on-exit, want 1", fw.removed)
	}
}

// TestEngineFirewallFails: rules that masquerade were asked for, so failing
// them stops overlayd before it says it is ready.
func TestEngineFirewallFails(t *testing.T) {
	fw := &fakeFirewall{masq: true, ensureErr: errors.New("iptables: no chain/target/match by that name")}
	dir := t.TempDir()
	cfg := Config{
		SubnetFile: filepath.Join(dir, "subnet.env"), RenewMargin: time.Hour, LeaseTTL: 24 * time.Hour,
		TunName: "flannel0", Queues: 1, Logger: slog.New(slog.DiscardHandler),
	}
	host := &memHost{iface: ExtIface{Name: "ext0", Index: 2, Addr: netip.MustParseAddr("198.18.0.1"), MTU: 1500}, net: underlaytest.NewNetwork()}
	err := Run(context.Background(), cfg, Deps{Registry: newPairRegistry(t), Host: host, Firewall: fw})
	if err == nil || !strings.Contains(err.Error(), "--ip-masq") || !strings.Contains(err.Error(), "no chain") {
		t.Errorf("Run: %v; want the --ip-masq failure", err)
	}
	if _, err := os.Stat(cfg.SubnetFile); err == nil {
		t.Error("subnet file written although the rules failed")
	}
	if _, err := host.tun.MTU(); err != os.ErrClosed {
		t.Errorf("TUN queue after the failed start: MTU() = %v, want os.ErrClosed (closed)", err)
	}
}

// TestEngineClosesTUNWhenStartFails: a phase that fails after the TUN was
// created (here the underlay socket: port 8285 taken) closes its queues.
func TestEngineClosesTUNWhenStartFails(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{
		SubnetFile: filepath.Join(dir, "subnet.env"), RenewMargin: time.Hour, LeaseTTL: 24 * time.Hour,
		TunName: "flannel0", Queues: 1, Logger: slog.New(slog.DiscardHandler),
	}
	host := &memHost{
		iface:     ExtIface{Name: "ext0", Index: 2, Addr: netip.MustParseAddr("198.18.0.1"), MTU: 1500},
		net:       underlaytest.NewNetwork(),
		listenErr: errors.New("listen udp 198.18.0.1:8285: bind: address already in use"),
	}
	err := Run(context.Background(), cfg, Deps{Registry: newPairRegistry(t), Host: host})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Run: %v; want the listen failure", err)
	}
	if host.tun == nil {
		t.Fatal("no TUN queue was opened")
	}
	if _, err := host.tun.MTU(); err != os.ErrClosed {
		t.Errorf("TUN queue after the failed start: MTU() = %v, want os.ErrClosed (closed)", err)
	}
}
