package netns

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"
)

func TestOwnerPid(t *testing.T) {
	for _, tt := range []struct {
		name string
		pid  int
		ok   bool
	}{
		{"ovd-lab-5254-2-h1", 5254, true},
		{"ovd-lab-5254-2-h1c1", 5254, true},
		{"ovd-e2e-udp-77-13", 77, true},
		{"ovd-bench-1-9-sw", 1, true},
		{"ovd-e2e-400x-77-1-h1", 77, true},  // a numeric tag field, as Prefix writes it
		{"ovd-lab-99999999999-1", 0, false}, // beyond any pid_max
		{"ovd-lab-5254", 0, false},          // no sequence number
		{"ovd-5254-2", 0, false},            // no tag
		{"ovd-lab-x-2-h1", 0, false},        // no pid
		{"other-lab-5254-2", 0, false},
		{"ovd", 0, false},
	} {
		pid, ok := ownerPid(tt.name)
		if pid != tt.pid || ok != tt.ok {
			t.Errorf("ownerPid(%q) = %d, %v; want %d, %v", tt.name, pid, ok, tt.pid, tt.ok)
		}
	}
}

// A namespace named for a process that has exited is stale and Prune
// deletes it; one of a running process is neither.
func TestStaleAndPrune(t *testing.T) {
	skipUnlessAvailable(t)
	t.Parallel()
	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	dead := exited.Process.Pid
	if alive(dead) {
		t.Skipf("pid %d of an exited process is in use again", dead)
	}
	deadNS := &NS{Name: "ovd-stale-" + strconv.Itoa(dead) + "-1-h1"}
	if _, err := New(deadNS.Name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deadNS.Delete() })
	prefix := Prefix("stale-live") // this process's pid
	t.Cleanup(func() { checkGone(t, prefix) })
	live := newNS(t, prefix, "a")

	stale, err := Stale()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(stale, deadNS.Name) || slices.Contains(stale, live.Name) {
		t.Errorf("Stale() = %v: want %s in it and not %s", stale, deadNS.Name, live.Name)
	}
	// Prune deletes what Stale lists, every such namespace of the machine:
	// here only ours.
	pruned, err := deleteAll([]string{deadNS.Name})
	if err != nil || !slices.Equal(pruned, []string{deadNS.Name}) {
		t.Errorf("deleteAll = %v, %v", pruned, err)
	}
	if _, err := os.Stat(deadNS.Path()); !os.IsNotExist(err) {
		t.Errorf("%s still there after deleteAll: %v", deadNS.Name, err)
	}
	// A process inside keeps a namespace of a dead owner off the list.
	busy := &NS{Name: "ovd-stale-" + strconv.Itoa(dead) + "-2-h1"}
	if _, err := New(busy.Name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Delete() })
	sleeper := busy.Command(context.Background(), "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	// ip netns exec enters the namespace after it starts: wait until the
	// sleeper runs inside (bounded, not a measure of speed).
	for i := 0; !inUse(busy.Name); i++ {
		if i == 1000 {
			t.Fatalf("sleep %d never ran inside %s", sleeper.Process.Pid, busy.Name)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if stale, err := Stale(); err != nil || slices.Contains(stale, busy.Name) {
		t.Errorf("Stale() = %v, %v: lists %s, which a process runs in", stale, err, busy.Name)
	}
}
