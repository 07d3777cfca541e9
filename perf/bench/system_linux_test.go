package bench

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/overlayd/overlayd/perf/cluster"
	"github.com/overlayd/overlayd/perf/netns"
)

// TestKernelSystems builds each kernel baseline, checks it is programmed as
// flanneld would do it and that its containers reach each other (Setup
// pings), and that Teardown leaves no namespace behind.
func TestKernelSystems(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: skipped in -short mode")
	}
	if err := netns.Available(); err != nil {
		t.Skipf("needs network namespaces: %v", err)
	}
	for _, name := range []string{"host-gw", Baseline} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, err := LookupSystem(name)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			prefix := netns.Prefix("benchtest")
			tb, err := s.Setup(ctx, Env{Prefix: prefix, WorkDir: t.TempDir(), Logf: t.Logf})
			if err != nil {
				t.Fatal(err)
			}
			torn := false
			t.Cleanup(func() {
				if !torn {
					tb.Teardown()
				}
			})
			client, server := tb.Endpoints()
			if client.Host.Index != 0 || server.Host.Index != 1 {
				t.Errorf("client on host %d, server on host %d; want 0 and 1", client.Host.Index, server.Host.Index)
			}
			if pids := tb.OverlaydPIDs(); len(pids) != 0 {
				t.Errorf("a kernel system reports overlayd pids %v", pids)
			}
			if pids := tb.ForwarderPIDs(); len(pids) != 0 {
				t.Errorf("a kernel system reports forwarder pids %v", pids)
			}
			if name == Baseline {
				checkFlannelDevice(ctx, t, client.Host.NS)
			}
			torn = true
			if err := tb.Teardown(); err != nil {
				t.Fatal(err)
			}
			if left, _ := netns.List(prefix); len(left) > 0 {
				t.Errorf("namespaces left after Teardown: %v", left)
			}
		})
	}
}

// checkFlannelDevice compares host 1's flannel.1 with FLANNEL.md §6.
func checkFlannelDevice(ctx context.Context, t *testing.T, ns *netns.NS) {
	t.Helper()
	want := map[string][]string{
		"ip -d link show flannel.1":     {"mtu 1450", "link/ether 02:00:00:00:00:01", "vxlan id 1 local 198.18.0.1 dev eth0", "dstport 8472", "nolearning"},
		"ip addr show flannel.1":        {"inet 100.96.1.0/32"},
		"ip route":                      {"100.96.2.0/24 via 100.96.2.0 dev flannel.1 onlink"},
		"ip neigh show dev flannel.1":   {"100.96.2.0 lladdr 02:00:00:00:00:02 PERMANENT"},
		"bridge fdb show dev flannel.1": {"02:00:00:00:00:02 dst 198.18.0.2 self permanent"},
	}
	for command, parts := range want {
		args := strings.Fields(command)
		out, err := ns.Exec(ctx, args[0], args[1:]...)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range parts {
			if !strings.Contains(string(out), p) {
				t.Errorf("%s: no %q in:\n%s", command, p, out)
			}
		}
	}
}

// TestFlanneldSystems runs the real flanneld's udp and vxlan backends as
// the bench does: Setup checks that the containers reach each other with a
// full-MTU ping, and Teardown leaves nothing behind.
func TestFlanneldSystems(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: skipped in -short mode")
	}
	if err := netns.Available(); err != nil {
		t.Skipf("needs network namespaces: %v", err)
	}
	flanneld, err := cluster.Flanneld()
	var envErr *cluster.EnvError
	if errors.As(err, &envErr) {
		t.Fatal(err)
	}
	if err != nil {
		t.Skipf("%v", err)
	}
	overlayd := filepath.Join(t.TempDir(), "overlayd") // for `overlayd etcd`
	if out, err := exec.Command("go", "build", "-o", overlayd, "github.com/overlayd/overlayd/cmd/overlayd").CombinedOutput(); err != nil {
		t.Fatalf("build overlayd: %v\n%s", err, out)
	}
	for _, tt := range []struct {
		name string
		mtu  int
	}{{"flanneld-udp", 1472}, {"flanneld-vxlan", 1450}} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := LookupSystem(tt.name)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			prefix := netns.Prefix("benchfl")
			tb, err := s.Setup(ctx, Env{Prefix: prefix, WorkDir: t.TempDir(), Overlayd: overlayd, Flanneld: flanneld, Logf: t.Logf})
			if err != nil {
				t.Fatal(err)
			}
			if got := tb.ContainerMTU(); got != tt.mtu {
				t.Errorf("container MTU %d, want flanneld's %d", got, tt.mtu)
			}
			if err := tb.Teardown(); err != nil {
				t.Fatal(err)
			}
			if left, _ := netns.List(prefix); len(left) > 0 {
				t.Errorf("namespaces left after Teardown: %v", left)
			}
		})
	}
}

// TestFlanneldMissing: without a flanneld binary the rows fail at setup,
// saying why, and build nothing.
func TestFlanneldMissing(t *testing.T) {
	for _, bin := range []string{"", "/nonexistent/flanneld", "/"} {
		_, err := flanneldSystem{name: "flanneld-udp", config: udpConfig}.Setup(context.Background(), Env{Flanneld: bin})
		if err == nil || !strings.Contains(err.Error(), "flanneld") {
			t.Errorf("flanneld %q: error %v, want one that names flanneld", bin, err)
		}
	}
}
