package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/overlayd/overlayd/perf/cluster"
)

// TestBadInput: wrong flags and configs get an error that names the field
// and the fix, and a missing config or etcd is waited for, not a crash.
func TestBadInput(t *testing.T) {
	c := startCluster(t, 2, cluster.Options{})
	ctx := context.Background()
	host := c.Daemons[0].Host
	etcdURL := c.EtcdEndpoint()

	t.Run("UnknownIface", func(t *testing.T) {
		// Its own --tun-name: host1's daemon holds flannel0 in this namespace.
		out, err := host.NS.Exec(ctx, overlaydBin, "run", "--iface", "nosuch0", "--etcd-endpoints", etcdURL, "--tun-name", "ovdiface0")
		if err == nil {
			t.Fatal("overlayd started with a missing interface")
		}
		if !strings.Contains(string(out), `--iface "nosuch0": no such interface`) {
			t.Fatalf("error does not name the flag and the problem:\n%s", out)
		}
	})

	t.Run("ConfigPutValidates", func(t *testing.T) {
		out, err := host.NS.Exec(ctx, overlaydBin, "config", "put", "--etcd-endpoints", etcdURL, "--etcd-prefix", "/check",
			`{"Network":"100.96.0.0/16","SubnetLen":31}`)
		if err == nil {
			t.Fatal("config put accepted SubnetLen 31")
		}
		if !strings.Contains(string(out), "SubnetLen") {
			t.Fatalf("error does not name the field:\n%s", out)
		}
	})

	// The config as JSON goes back in with config put, as an operator
	// copying it to another prefix or editing it would.
	t.Run("ConfigGetJSONPutsBack", func(t *testing.T) {
		get := func(prefix string) []byte {
			t.Helper()
			out, err := host.NS.Exec(ctx, overlaydBin, "config", "get", "--json", "--etcd-endpoints", etcdURL, "--etcd-prefix", prefix)
			if err != nil {
				t.Fatalf("config get --json --etcd-prefix %s: %v\n%s", prefix, err, out)
			}
			return out
		}
		orig := get("/coreos.com/network") // the cluster's, overlayd's default
		if out, err := host.NS.Exec(ctx, overlaydBin, "config", "put", "--etcd-endpoints", etcdURL, "--etcd-prefix", "/copy",
			string(orig)); err != nil {
			t.Fatalf("config put of config get's JSON: %v\n%s", err, out)
		}
		if copied := get("/copy"); string(copied) != string(orig) {
			t.Fatalf("the config put back reads\n%s\nwant\n%s", copied, orig)
		}
	})

	t.Run("MalformedConfigInEtcd", func(t *testing.T) {
		etcdctl, err := exec.LookPath("etcdctl")
		if err != nil {
			t.Skip("etcdctl (Debian etcd-client) is not installed; .ci/run installs it")
		}
		// Written behind overlayd's back, as an operator with etcdctl could.
		if out, err := c.Topo.Switch.Exec(ctx, etcdctl, "--endpoints", etcdURL, "put", "/bad/config",
			`{"Network":"100.96.0.0/16","SubnetLen":31}`); err != nil {
			t.Fatalf("etcdctl put: %v\n%s", err, out)
		}
		out, err := host.NS.Exec(ctx, overlaydBin, "run", "--iface", host.Iface, "--etcd-endpoints", etcdURL,
			"--etcd-prefix", "/bad", "--tun-name", "ovdbad0", "--subnet-file", filepath.Join(t.TempDir(), "subnet.env"),
			"--control-socket", filepath.Join(t.TempDir(), "ctl.sock"))
		if err == nil {
			t.Fatal("overlayd ran with SubnetLen 31")
		}
		for _, want := range []string{"/bad/config", "SubnetLen"} {
			if !strings.Contains(string(out), want) {
				t.Fatalf("error does not name %s:\n%s", want, out)
			}
		}
	})

	t.Run("MissingConfigIsWaitedFor", func(t *testing.T) {
		dir := t.TempDir()
		log := filepath.Join(dir, "overlayd.log")
		p, err := cluster.StartProcess(ctx, host.NS, log, overlaydBin, "run", "--iface", host.Iface,
			"--etcd-endpoints", etcdURL, "--etcd-prefix", "/later", "--tun-name", "ovdlater0",
			"--subnet-file", filepath.Join(dir, "subnet.env"), "--control-socket", filepath.Join(dir, "ctl.sock"))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Stop()
		waitLog(t, p, log, `network config not found; waiting for it`, `etcd has no key /later/config`)
		if out, err := host.NS.Exec(ctx, overlaydBin, "config", "put", "--etcd-endpoints", etcdURL, "--etcd-prefix", "/later",
			`{"Network":"100.96.0.0/16","Backend":{"Type":"udp","Port":8299}}`); err != nil {
			t.Fatalf("config put: %v\n%s", err, out)
		}
		waitLog(t, p, log, "msg=ready")
	})

	t.Run("EtcdUnreachableIsRetried", func(t *testing.T) {
		dir := t.TempDir()
		log := filepath.Join(dir, "overlayd.log")
		p, err := cluster.StartProcess(ctx, host.NS, log, overlaydBin, "run", "--iface", host.Iface,
			"--etcd-endpoints", "http://198.18.0.254:2399", "--tun-name", "ovdnoetcd0",
			"--subnet-file", filepath.Join(dir, "subnet.env"), "--control-socket", filepath.Join(dir, "ctl.sock"))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Stop()
		waitLog(t, p, log, "registry unreachable; retrying")
		if p.Exited() {
			t.Fatalf("overlayd exited while etcd was unreachable:\n%s", p.Tail(2048))
		}
	})
}

// waitLog waits until the process log holds every string, failing if the
// process exits first.
func waitLog(t *testing.T, p *cluster.Process, path string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(string(b), w)
		}
		if ok {
			return
		}
		if p.Exited() {
			t.Fatalf("process exited before logging %q:\n%s", want, b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("log never showed %q:\n%s", want, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
