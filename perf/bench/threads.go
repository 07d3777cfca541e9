package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ThreadStats is what the scheduler recorded for every thread of a set of
// processes, summed: the figures that say where a forwarder's hop goes.
// Each sleep is a wait in the kernel that a wake-up ended: a userspace
// forwarder pays one per hop that found its queue empty.
type ThreadStats struct {
	OnCPU        time.Duration // time running (schedstat's first field)
	RunQueueWait time.Duration // time runnable but waiting for a CPU (its second)
	Sleeps       uint64        // voluntary context switches
	Involuntary  uint64        // involuntary context switches: preemptions, and yields that gave the CPU away
}

func (s *ThreadStats) add(t ThreadStats) {
	s.OnCPU += t.OnCPU
	s.RunQueueWait += t.RunQueueWait
	s.Sleeps += t.Sleeps
	s.Involuntary += t.Involuntary
}

// threadSet is ThreadStats by thread id.
type threadSet map[int]ThreadStats

// since sums what every thread of s did after earlier: all of it for a
// thread that earlier did not have, or whose counts went back (its id was
// reused). A thread that ended in between is missing from s and its share
// is lost (/proc keeps no account of it), rather than subtracted from the
// others.
func (s threadSet) since(earlier threadSet) ThreadStats {
	var sum ThreadStats
	for tid, t := range s {
		e, ok := earlier[tid]
		if ok && t.OnCPU >= e.OnCPU && t.RunQueueWait >= e.RunQueueWait && t.Sleeps >= e.Sleeps && t.Involuntary >= e.Involuntary {
			t = ThreadStats{
				OnCPU:        t.OnCPU - e.OnCPU,
				RunQueueWait: t.RunQueueWait - e.RunQueueWait,
				Sleeps:       t.Sleeps - e.Sleeps,
				Involuntary:  t.Involuntary - e.Involuntary,
			}
		}
		sum.add(t)
	}
	return sum
}

// ParseSchedstat reads /proc/<pid>/task/<tid>/schedstat: nanoseconds on
// the CPU, nanoseconds waiting in a run queue, and times run (unused).
func ParseSchedstat(data []byte) (onCPU, wait time.Duration, err error) {
	f := strings.Fields(string(data))
	if len(f) < 2 {
		return 0, 0, fmt.Errorf("schedstat: %d fields, want at least 2", len(f))
	}
	var ns [2]int64
	for i := range ns {
		if ns[i], err = strconv.ParseInt(f[i], 10, 64); err != nil {
			return 0, 0, fmt.Errorf("schedstat: field %d: %w", i+1, err)
		}
	}
	return time.Duration(ns[0]), time.Duration(ns[1]), nil
}

// ParseCtxtSwitches reads the voluntary and involuntary context switch
// counts from /proc/<pid>/task/<tid>/status.
func ParseCtxtSwitches(data []byte) (voluntary, involuntary uint64, err error) {
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *uint64
		switch key {
		case "voluntary_ctxt_switches":
			dst = &voluntary
		case "nonvoluntary_ctxt_switches":
			dst = &involuntary
		default:
			continue
		}
		if *dst, err = strconv.ParseUint(strings.TrimSpace(value), 10, 64); err != nil {
			return 0, 0, fmt.Errorf("status: %s: %w", key, err)
		}
		found++
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("status: %w", err)
	}
	if found != 2 {
		return 0, 0, errors.New("status: no voluntary_ctxt_switches and nonvoluntary_ctxt_switches lines")
	}
	return voluntary, involuntary, nil
}

// readThreads reads ThreadStats of every thread of the processes, under
// proc (normally "/proc"). A thread that ends while it is read is left
// out; a process that is gone, or none of whose threads can be read (a
// kernel without schedstat), is an error.
func readThreads(proc string, pids []int) (threadSet, error) {
	set := threadSet{}
	for _, pid := range pids {
		dir := filepath.Join(proc, strconv.Itoa(pid), "task")
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("threads of pid %d: %w", pid, err)
		}
		read := 0
		for _, e := range entries {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			t, err := readThread(filepath.Join(dir, e.Name()))
			if err != nil && ended(err, filepath.Join(dir, e.Name())) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("thread %d of pid %d: %w", tid, pid, err)
			}
			set[tid] = t
			read++
		}
		if read == 0 {
			return nil, fmt.Errorf("pid %d: no thread's schedstat and status could be read", pid)
		}
	}
	return set, nil
}

// ended reports whether err, from reading a thread's files in dir, says
// that the thread ended meanwhile: its files gone (ENOENT) or no longer
// readable (ESRCH), and its directory gone too. A file missing from a
// thread still there (no schedstat in this kernel) is no such thing.
func ended(err error, dir string) bool {
	if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ESRCH) {
		return false
	}
	_, statErr := os.Stat(dir)
	return errors.Is(statErr, fs.ErrNotExist)
}

func readThread(dir string) (ThreadStats, error) {
	var t ThreadStats
	data, err := os.ReadFile(filepath.Join(dir, "schedstat"))
	if err != nil {
		return t, err
	}
	if t.OnCPU, t.RunQueueWait, err = ParseSchedstat(data); err != nil {
		return t, err
	}
	if data, err = os.ReadFile(filepath.Join(dir, "status")); err != nil {
		return t, err
	}
	t.Sleeps, t.Involuntary, err = ParseCtxtSwitches(data)
	return t, err
}
