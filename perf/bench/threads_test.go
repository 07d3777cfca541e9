package bench

import (
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
		1: {OnCPU: 100, RunQueueWait: 10, Sleeps: 5, Involuntary: 1},
		2: {OnCPU: 900, RunQueueWait: 90, Sleeps: 50, Involuntary: 9}, // ends
	}
	after := threadSet{
		1: {OnCPU: 150, RunQueueWait: 12, Sleeps: 8, Involuntary: 1},
		3: {OnCPU: 40, RunQueueWait: 4, Sleeps: 2, Involuntary: 1}, // new
	}
	want := ThreadStats{OnCPU: 90, RunQueueWait: 6, Sleeps: 5, Involuntary: 1}
	if got := after.since(before); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// Thread 1's id reused by a younger thread: its counts went back, so
	// they are all its own.
	reused := threadSet{1: {OnCPU: 30, RunQueueWait: 3, Sleeps: 2, Involuntary: 0}}
	if got, want := reused.since(before), reused[1]; got != want {
		t.Errorf("a reused thread id: got %+v, want %+v", got, want)
	}
}

// A thread whose files vanish because it ended is left out; a kernel
// without schedstat is an error, not a thread-less process.
func TestReadThreadsMissingFiles(t *testing.T) {
	proc := fakeProc(t, map[string][4]int{"10/10": {1000, 10, 3, 1}, "10/11": {2000, 20, 4, 0}})
	// A directory entry whose thread is gone by the time it is read.
	if err := os.MkdirAll(filepath.Join(proc, "10", "task", "12"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(proc, "10", "task", "12")); err != nil {
		t.Fatal(err)
	}
	if !ended(fs.ErrNotExist, filepath.Join(proc, "10", "task", "12")) {
		t.Error("a thread whose directory is gone has not ended")
	}
	for _, tid := range []string{"10", "11"} {
		if err := os.Remove(filepath.Join(proc, "10", "task", tid, "schedstat")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := readThreads(proc, []int{10}); err == nil || !strings.Contains(err.Error(), "thread 1") {
		t.Errorf("no schedstat: %v, want an error naming the thread", err)
	}
	if ended(fs.ErrNotExist, filepath.Join(proc, "10", "task", "10")) {
		t.Error("a missing schedstat of a thread still there counts as its end")
	}
	empty := t.TempDir()
	if err := os.MkdirAll(filepath.Join(empty, "20", "task"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := readThreads(empty, []int{20}); err == nil || !strings.Contains(err.Error(), "pid 20") {
		t.Errorf("no thread read: %v, want an error naming the process", err)
	}
}

// This process's threads, from the real /proc: the calling thread is
// among them, with its time on a CPU.
func TestReadThreadsOfSelf(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	set, err := readThreads("/proc", []int{os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	me, ok := set[unix.Gettid()]
	if !ok || me.OnCPU <= 0 {
		t.Errorf("thread %d: %+v, found %v; want it with time on a CPU (threads: %d)", unix.Gettid(), me, ok, len(set))
	}
}
