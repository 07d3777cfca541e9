package firewall

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/overlayd/overlayd/perf/netns"
)

// TestIPTablesInNamespace runs the real commands of each installed back end
// in a fresh network namespace: what Ensure writes is what iptables -S
// reads back (a second Ensure changes nothing), removed rules come back,
// Remove leaves nothing.
func TestIPTablesInNamespace(t *testing.T) {
	if err := netns.Available(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	for _, name := range []string{BackendNFT, BackendLegacy} {
		t.Run(name, func(t *testing.T) {
			path, err := exec.LookPath("iptables-" + name)
			if err != nil {
				t.Skipf("iptables-%s not installed (Debian: apt-get install iptables)", name)
			}
			ns, err := netns.New(netns.Prefix("fw-" + name))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := ns.Delete(); err != nil {
					t.Error(err)
				}
			})
			// Every command runs on Do's thread, in ns.
			if err := ns.Do(func() error { checkBackend(t, Backend{Name: name, Path: path}); return nil }); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func checkBackend(t *testing.T, b Backend) {
	save := func() string {
		out, err := exec.CommandContext(context.Background(), b.Path+"-save").Output()
		if err != nil {
			t.Fatalf("%s-save: %v", b.Path, err)
		}
		return string(out)
	}
	run := func(args ...string) {
		if out, err := exec.Command(b.Path, args...).CombinedOutput(); err != nil {
			t.Fatalf("iptables %q: %v: %s", args, err, out)
		}
	}
	ipt, err := NewIPTablesWith(b, Options{Masquerade: true, Forward: true})
	if err != nil {
		t.Fatal(err)
	}
	if !ipt.opts.RandomFully {
		t.Logf("%s has no --random-fully", b.Path)
	}
	// A host with Docker 28's FORWARD: its policy DROP, DOCKER-USER first,
	// then a chain that drops what enters docker0 from elsewhere.
	run("-P", "FORWARD", "DROP")
	run("-A", "FORWARD", "-i", "lo", "-j", "ACCEPT")
	run("-N", "DOCKER-USER")
	run("-N", "DOCKER-FORWARD")
	run("-A", "FORWARD", "-j", "DOCKER-USER")
	run("-A", "FORWARD", "-j", "DOCKER-FORWARD")
	run("-A", "DOCKER-FORWARD", "!", "-i", "docker0", "-o", "docker0", "-j", "DROP")
	if n, err := ipt.Ensure(testNetwork, testSubnet, testIngress); err != nil || n != 12 {
		t.Fatalf("first Ensure: %d changes, %v; want 12\n%s", n, err, save())
	}
	first := save()
	for _, want := range []string{
		`-A POSTROUTING -m comment --comment "overlayd masq" -j OVERLAYD-POSTRTG`,
		`-A OVERLAYD-POSTRTG -s 100.96.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "overlayd masq" -j MASQUERADE`,
		`-A FORWARD -j DOCKER-FORWARD` + "\n" + `-A FORWARD -m comment --comment "overlayd forward" -j OVERLAYD-FWD`,
		`-A DOCKER-USER -m comment --comment "overlayd forward in" -j OVERLAYD-FWD-IN`,
		`-A OVERLAYD-FWD-IN -s 100.96.0.0/16 -d 100.96.3.0/24 -i flannel0 -m comment --comment "overlayd forward in" -j ACCEPT`,
		`-A OVERLAYD-FWD -d 100.96.0.0/16 -m comment --comment "overlayd forward" -j ACCEPT`,
	} {
		if !strings.Contains(first, want) {
			t.Errorf("missing %q in\n%s", want, first)
		}
	}
	if n, err := ipt.Ensure(testNetwork, testSubnet, testIngress); err != nil || n != 0 {
		t.Errorf("second Ensure: %d changes, %v; want none (does -S read back what was written?)", n, err)
	}
	// A resync's check is one iptables-save per table; it must read what
	// -S reads, or every resync takes the slow path.
	if !ipt.inPlace(Rules(testNetwork, testSubnet, testIngress, ipt.opts)) {
		t.Errorf("%s-save does not show the rules in place:\n%s", b.Path, save())
	}

	// A firewall reload: the chain flushed, a jump gone.
	run("-F", ForwardChain)
	run("-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", masqComment, "-j", MasqChain)
	if n, err := ipt.Ensure(testNetwork, testSubnet, testIngress); err != nil || n != 3 {
		t.Errorf("repair: %d changes, %v; want 3", n, err)
	}
	if got := save(); stripCounters(got) != stripCounters(first) {
		t.Errorf("after repair:\n%s\nwant:\n%s", got, first)
	}

	// From rules without the device match (overlayd before it had one):
	// the accept is replaced, new one in before the old one goes.
	if n, err := ipt.Ensure(testNetwork, testSubnet, ""); err != nil || n != 2 {
		t.Errorf("rules without a device: %d changes, %v; want 2", n, err)
	}
	if n, err := ipt.Ensure(testNetwork, testSubnet, testIngress); err != nil || n != 2 {
		t.Errorf("back to the device match: %d changes, %v; want 2", n, err)
	}
	if got := save(); stripCounters(got) != stripCounters(first) {
		t.Errorf("after the device match came back:\n%s\nwant:\n%s", got, first)
	}

	if err := ipt.Remove(); err != nil {
		t.Fatal(err)
	}
	if got := save(); strings.Contains(got, "OVERLAYD") || !strings.Contains(got, "-A FORWARD -i lo -j ACCEPT") || !strings.Contains(got, ":DOCKER-USER") {
		t.Errorf("after Remove:\n%s", got)
	}
}

// stripCounters drops the comment lines and chain counters of
// iptables-save, which change between two saves.
func stripCounters(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, ":") {
			l, _, _ = strings.Cut(l, " [")
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}
