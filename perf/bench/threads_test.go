package bench

import (
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseSchedstat(t *testing.T) {
	on, wait, err := ParseSchedstat([]byte("302531387 2592330 43\n"))
	if err != nil || on != 302531387*time.Nanosecond || wait != 2592330*time.Nanosecond {
		t.Errorf("got %v, %v, %v; want 302.531387ms, 2.59233ms", on, wait, err)
	}
	for _, bad := range []string{"", "12", "12 x 3", "-"} {
		if _, _, err := ParseSchedstat([]byte(bad)); err == nil {
			t.Errorf("ParseSchedstat(%q): no error", bad)
		}
	}
}

const statusSample = `Name:	overlayd
State:	S (sleeping)
Tgid:	30022
voluntary_ctxt_switches:	3466
nonvoluntary_ctxt_switches:	52
`

func TestParseCtxtSwitches(t *testing.T) {
	v, nv, err := ParseCtxtSwitches([]byte(statusSample))
	if err != nil || v != 3466 || nv != 52 {
		t.Errorf("got %d, %d, %v; want 3466, 52", v, nv, err)
	}
	for _, bad := range []string{
		"Name:\tx\n", // neither line
		"voluntary_ctxt_switches:\t3\n",
		"voluntary_ctxt_switches:\t3\nnonvoluntary_ctxt_switches:\tmany\n",
	} {
		if _, _, err := ParseCtxtSwitches([]byte(bad)); err == nil {
			t.Errorf("ParseCtxtSwitches(%q): no error", bad)
		}
	}
}

// fakeProc lays out /proc/<pid>/task/<tid>/{schedstat,status} for the
// threads given as "pid/tid" → [on-CPU ns, wait ns, voluntary, involuntary].
func fakeProc(t *testing.T, threads map[string][4]int) string {
	t.Helper()
	root := t.TempDir()
	for id, v := range threads {
		pid, tid, _ := strings.Cut(id, "/")
		dir := filepath.Join(root, pid, "task", tid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		write := func(name, content string) {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write("schedstat", strings.Join([]string{strconv.Itoa(v[0]), strconv.Itoa(v[1]), "7"}, " ")+"\n")
		write("status", "voluntary_ctxt_switches:\t"+strconv.Itoa(v[2])+"\nnonvoluntary_ctxt_switches:\t"+strconv.Itoa(v[3])+"\n")
	}
	return root
}

func TestReadThreadsOfEveryProcess(t *testing.T) {
	proc := fakeProc(t, map[string][4]int{
		"10/10": {1000, 10, 3, 1},
		"10/11": {2000, 20, 4, 0},
		"20/20": {4000, 40, 5, 2},
		"30/30": {8000, 80, 6, 3}, // not asked for
	})
	got, err := readThreads(proc, []int{10, 20})
	want := threadSet{10: {1000, 10, 3, 1}, 11: {2000, 20, 4, 0}, 20: {4000, 40, 5, 2}}
	if err != nil || !maps.Equal(got, want) {
		t.Errorf("got %+v, %v; want %+v", got, err, want)
	}
	if _, err := readThreads(proc, []int{40}); err == nil || !strings.Contains(err.Error(), "pid 40") {
		t.Errorf("a process that is gone: %v, want an error naming it", err)
	}
	if got, err := readThreads(proc, nil); err != nil || len(got) != 0 {
		t.Errorf("no processes: %+v, %v; want none", got, err)
	}
}

// A thread that starts between two snapshots counts whole; one that ends
// is lost, and takes nothing from the others.
func TestThreadSetSince(t *testing.T) {
	before := threadSet{
		1: {OnCPU: 100, RunQueueWait: 10, Sleeps: 5, Preemptions: 1},
		2: {OnCPU: 900, RunQueueWait: 90, Sleeps: 50, Preemptions: 9}, // ends
	}
	after := threadSet{
		1: {OnCPU: 150, RunQueueWait: 12, Sleeps: 8, Preemptions: 1},
		3: {OnCPU: 40, RunQueueWait: 4, Sleeps: 2, Preemptions: 1}, // new
	}
	want := ThreadStats{OnCPU: 90, RunQueueWait: 6, Sleeps: 5, Preemptions: 1}
	if got := after.since(before); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// The test's own threads, read from the real /proc: sleeping must count a
// voluntary switch, and work must count CPU time.
func TestReadThreadStatsOfSelf(t *testing.T) {
	pid := os.Getpid()
	before, err := readThreads("/proc", []int{pid})
	if err != nil {
		t.Skipf("no schedstat here: %v", err)
	}
	for range 5 {
		time.Sleep(time.Millisecond)
	}
	sink := 0
	for i := range 10_000_000 {
		sink += i * i
	}
	after, err := readThreads("/proc", []int{pid})
	if err != nil {
		t.Fatal(err)
	}
	d := after.since(before)
	if d.Sleeps == 0 || d.OnCPU <= 0 {
		t.Errorf("over five sleeps and a loop (%d): %+v; want sleeps and time on a CPU", sink, d)
	}
}
