package demo

import (
	"bytes"
	"context"
	"os"
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
