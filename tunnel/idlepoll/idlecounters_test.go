package idlepoll

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadIdleCounters(t *testing.T) {
	root := t.TempDir()
	write := func(path, value string) {
		t.Helper()
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(value+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, cpu := range []string{"cpu0", "cpu1"} {
		write(cpu+"/cpuidle/state0/latency", "0") // POLL
		write(cpu+"/cpuidle/state0/time", "1500")
		write(cpu+"/cpuidle/state0/usage", "7")
		write(cpu+"/cpuidle/state1/latency", "1") // halt
		write(cpu+"/cpuidle/state1/time", "900000")
		write(cpu+"/cpuidle/state1/usage", "40")
	}
	write("cpufreq/ignored", "x")
	c, err := ReadIdleCounters(root)
	if err != nil {
		t.Fatal(err)
	}
	want := IdleCounters{Polling: 3 * time.Millisecond, Halts: 80, HaltStates: true}
	if c != want {
		t.Fatalf("ReadIdleCounters = %+v, want %+v", c, want)
	}

	write("cpu1/cpuidle/state1/usage", "many")
	if _, err := ReadIdleCounters(root); err == nil || !strings.Contains(err.Error(), "state1/usage") {
		t.Fatalf("a bad counter: error %v, want one naming it", err)
	}
	if c, err := ReadIdleCounters(t.TempDir()); err != nil || c.HaltStates {
		t.Fatalf("no cpuidle: %+v, %v; want nothing found and no error", c, err)
	}
}
