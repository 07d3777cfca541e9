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
		write(cpu+"/cpuidle/state0/name", "POLL")
		write(cpu+"/cpuidle/state0/time", "1500")
		write(cpu+"/cpuidle/state0/usage", "7")
		write(cpu+"/cpuidle/state1/name", "haltpoll idle")
		write(cpu+"/cpuidle/state1/time", "900000")
		write(cpu+"/cpuidle/state1/usage", "40")
	}
	write("cpufreq/ignored", "x")
	c, err := ReadIdleCounters(root)
	if err != nil {
		t.Fatal(err)
	}
	want := IdleCounters{Polling: 3 * time.Millisecond, Halts: 80, CanPoll: true}
	if c != want {
		t.Fatalf("ReadIdleCounters = %+v, want %+v", c, want)
	}

	write("cpu1/cpuidle/state1/usage", "many")
	if _, err := ReadIdleCounters(root); err == nil || !strings.Contains(err.Error(), "state1/usage") {
		t.Fatalf("a bad counter: error %v, want one naming it", err)
	}
	if c, err := ReadIdleCounters(t.TempDir()); err != nil || c.CanPoll {
		t.Fatalf("no cpuidle: %+v, %v; want nothing found and no error", c, err)
	}

	// arm64: the shallowest state is WFI, a halt; nothing polls.
	wfi := t.TempDir()
	for _, f := range []string{"name", "usage", "time"} {
		v := map[string]string{"name": "WFI", "usage": "5", "time": "10"}[f]
		p := filepath.Join(wfi, "cpu0/cpuidle/state0", f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if c, err := ReadIdleCounters(wfi); err != nil || c.CanPoll || c.Polling != 0 || c.Halts != 5 {
		t.Fatalf("WFI only: %+v, %v; want 5 halts and no polling", c, err)
	}
}
