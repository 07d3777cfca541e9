package demo

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInterruptedRunsLeaveNothing: a demo or a lab stopped by Ctrl-C
// removes its work directory and points to no logs it removed.
func TestInterruptedRunsLeaveNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the demo and the lab create network namespaces")
	}
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Ctrl-C before anything was up: the "overlayd" (/bin/true, which passes the checks) never starts
	var out bytes.Buffer
	err := Run(ctx, Options{Overlayd: "/bin/true", Hosts: 2}, &out)
	if err == nil || strings.Contains(err.Error(), tmp) || strings.Contains(out.String(), "logs kept") {
		t.Errorf("demo: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := Up(ctx, Options{Overlayd: "/bin/true", Hosts: 2}, &out); !strings.Contains(out.String(), "removed "+tmp) {
		t.Errorf("lab: %v\n%s", err, out.String())
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("left behind in TMPDIR: %v", left)
	}
}

// The lab's commands to try are whole: no placeholder to fill in, the
// overlayd binary by an absolute path (it is not on PATH), and the
// registry reached from a host namespace, where etcd's address routes.
func TestLabInfoCommandsPasteAsTheyAre(t *testing.T) {
	l := labInfo{
		work: "/tmp/overlayd-lab-1", overlayd: "bin/overlayd", pid: 42,
		etcdPid: 7, etcd: "http://198.18.0.254:2379", etcdNS: "ovd-lab-1-2-sw",
		hosts: []labHost{
			{name: "host1", ns: "ovd-lab-1-2-h1", containerNS: "ovd-lab-1-2-h1c1", container: "100.96.5.2", pid: 8, socket: "/tmp/overlayd-lab-1/host1/overlayd.sock"},
			{name: "host2", ns: "ovd-lab-1-2-h2", containerNS: "ovd-lab-1-2-h2c1", container: "100.96.9.2", pid: 9, socket: "/tmp/overlayd-lab-1/host2/overlayd.sock"},
		},
	}
	var b bytes.Buffer
	l.write(&b)
	out := b.String()
	bin, err := filepath.Abs("bin/overlayd")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ip netns exec ovd-lab-1-2-h1c1 ping -c 3 100.96.9.2\n",
		bin + " status --control-socket /tmp/overlayd-lab-1/host1/overlayd.sock\n",
		"ip netns exec ovd-lab-1-2-h1 " + bin + " leases --etcd-endpoints http://198.18.0.254:2379\n",
		"kill 42 (overlayd-lab)",
		"'http://x/debug/pprof/profile?seconds=10'", // quoted: a ? is a glob to some shells
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "<") {
		t.Errorf("a placeholder left to fill in:\n%s", out)
	}
}
