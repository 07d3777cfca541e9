package bench

import (
	"os"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	// testdata/proc-stat.txt is this machine's /proc/stat:
	// cpu  90408 0 25236 170580 943 0 694 150 0 0
	c, err := ParseProcStat(readTestdata(t, "proc-stat.txt"))
	if err != nil {
		t.Fatal(err)
	}
	want := MachineCPU{User: 90408, System: 25236, Idle: 170580, IOWait: 943, SoftIRQ: 694, Steal: 150}
	if c != want {
		t.Errorf("got %+v, want %+v", c, want)
	}
	if got := c.Busy(); got != 90408+25236+694 {
		t.Errorf("Busy = %d, want user+nice+system+irq+softirq = %d", got, 90408+25236+694)
	}
}

func TestParseProcStatErrors(t *testing.T) {
	for name, in := range map[string]string{
		"empty":       "",
		"per-cpu":     "cpu0 1 2 3 4 5 6 7 8\n",
		"short":       "cpu  1 2 3 4\n",
		"not numbers": "cpu  1 2 x 4 5 6 7 8 9 10\n",
	} {
		if c, err := ParseProcStat([]byte(in)); err == nil {
			t.Errorf("%s: got %+v, want an error", name, c)
		}
	}
}

func TestParseProcPidStat(t *testing.T) {
	// A real line (cat), then the same with a command name that holds a
	// space and a ')' as a process may choose.
	line := "13807 (cat) R 13754 13754 9617 0 -1 4194304 100 0 0 0 7 5 0 0 20 0 1 0 144769 3133440 407"
	for _, in := range []string{line, "13807 (a) b) R 13754 13754 9617 0 -1 4194304 100 0 0 0 7 5 0 0 20 0 1 0 144769"} {
		got, err := ParseProcPidStat([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		if got != 12 {
			t.Errorf("%q: utime+stime = %d, want 7+5", in, got)
		}
	}
	for _, in := range []string{"", "13807 cat R 1 2", "13807 (cat) R 1 2 3", "1 (x) R 1 1 1 0 -1 0 0 0 0 0 u 5 0"} {
		if got, err := ParseProcPidStat([]byte(in)); err == nil {
			t.Errorf("%q: got %d, want an error", in, got)
		}
	}
}

func TestProcPidStatOfSelf(t *testing.T) {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if _, err := ParseProcPidStat(data); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshotSince(t *testing.T) {
	hz := clockTicks()
	if hz <= 0 {
		t.Fatalf("clockTicks = %v", hz)
	}
	t0 := time.Unix(100, 0)
	a := cpuSnapshot{at: t0, machine: 1000, procs: 10}
	b := cpuSnapshot{at: t0.Add(2 * time.Second), machine: 1000 + uint64(3*hz), procs: 10 + uint64(hz/2)}
	u := b.since(a)
	if u.Wall != 2*time.Second || u.Machine != 3 || u.Procs != 0.5 {
		t.Errorf("got %+v, want 2s wall, 3 s machine, 0.5 s procs", u)
	}
}

// Time idle CPUs spent polling counts as spent: /proc/stat calls it idle.
func TestUsageCountsIdlePolling(t *testing.T) {
	hz := clockTicks()
	earlier := cpuSnapshot{machine: 100, polling: 500 * time.Millisecond}
	later := cpuSnapshot{at: earlier.at.Add(time.Second), machine: 100 + uint64(hz), polling: 2 * time.Second}
	if got := later.since(earlier).Machine; got < 2.499 || got > 2.501 {
		t.Fatalf("Machine = %v s, want 2.5 (1 s busy + 1.5 s polling)", got)
	}
}
