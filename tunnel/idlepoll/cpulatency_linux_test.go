package idlepoll

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func haltEntries(t *testing.T) uint64 {
	t.Helper()
	c, err := ReadIdleCounters("")
	if err != nil {
		t.Fatal(err)
	}
	if !c.CanPoll {
		t.Skip("no cpuidle polling state beside halting ones: a request cannot make idle CPUs poll here")
	}
	return c.Halts
}

// awaitHalt waits until some CPU enters halt (a busy machine may keep
// them all busy for a while), and reports whether one did.
func awaitHalt(t *testing.T) bool {
	t.Helper()
	from := haltEntries(t)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		if haltEntries(t) != from {
			return true
		}
	}
	return false
}

// While the request is held, no CPU enters an idle state it must be woken
// from; once released, idle CPUs halt again.
func TestCPULatencyKeepsCPUsOutOfHalt(t *testing.T) {
	if _, err := os.Stat("/dev/cpu_dma_latency"); err != nil {
		t.Skipf("no PM QoS CPU latency request: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to open /dev/cpu_dma_latency")
	}
	if !awaitHalt(t) {
		t.Skipf("no CPU halted in 10 s: requests held by pids %v, or a machine too busy to idle", Holders())
	}

	var req CPULatency
	if err := req.Hold(); err != nil {
		t.Fatal(err)
	}
	// Taking the request wakes every idle CPU; one that halted before
	// counts its halt as it leaves.
	time.Sleep(10 * time.Millisecond)
	held := haltEntries(t)
	time.Sleep(100 * time.Millisecond)
	after := haltEntries(t)
	if err := req.Release(); err != nil {
		t.Fatal(err)
	}
	if after != held {
		t.Fatalf("CPUs entered halt %d times while the request was held", after-held)
	}

	if !awaitHalt(t) {
		if others := Holders(); len(others) > 0 {
			t.Skipf("no CPU halted after the release, but pids %v hold requests of their own", others)
		}
		t.Fatal("no CPU halted in 10 s after the release, and nothing else holds a request: it is still held")
	}
}

func TestCPULatencyNamesTheFile(t *testing.T) {
	req := CPULatency{Path: filepath.Join(t.TempDir(), "missing")}
	err := req.Hold()
	if err == nil || !strings.Contains(err.Error(), "PM QoS") {
		t.Fatalf("Hold on a missing file: %v", err)
	}
	if err := req.Release(); err != nil {
		t.Fatalf("Release after a failed Hold: %v", err)
	}
}
