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
	if !c.HaltStates {
		t.Skip("no cpuidle states with an exit latency: nothing to keep CPUs out of")
	}
	return c.Halts
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
	before := haltEntries(t)
	time.Sleep(50 * time.Millisecond)
	if haltEntries(t) == before {
		t.Skip("idle CPUs do not halt here (another request holds them polling)")
	}

	var req CPULatency
	if err := req.Hold(); err != nil {
		t.Fatal(err)
	}
	held := haltEntries(t)
	time.Sleep(100 * time.Millisecond)
	after := haltEntries(t)
	if err := req.Release(); err != nil {
		t.Fatal(err)
	}
	if after != held {
		t.Fatalf("CPUs entered halt %d times while the request was held", after-held)
	}

	released := haltEntries(t)
	time.Sleep(50 * time.Millisecond)
	if haltEntries(t) == released {
		t.Fatal("no CPU halted after the release: the request is still held")
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
