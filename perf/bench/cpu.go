package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/overlayd/overlayd/tunnel/idlepoll"
)

// MachineCPU is the aggregate "cpu" line of /proc/stat, in clock ticks
// summed over all cores.
type MachineCPU struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal uint64
}

// Busy is the time spent doing work that moves packets: user, nice, system,
// irq and softirq. Idle, iowait and steal are not ours; guest time is
// already inside user.
func (c MachineCPU) Busy() uint64 {
	return c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ
}

// ParseProcStat reads the aggregate "cpu" line of /proc/stat.
func ParseProcStat(data []byte) (MachineCPU, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "cpu" {
			continue
		}
		// Kernels since 2.6.11 have at least eight values; steal is the eighth.
		if len(fields) < 9 {
			return MachineCPU{}, fmt.Errorf("/proc/stat: cpu line has %d values, want at least 8", len(fields)-1)
		}
		var v [8]uint64
		for i := range v {
			n, err := strconv.ParseUint(fields[i+1], 10, 64)
			if err != nil {
				return MachineCPU{}, fmt.Errorf("/proc/stat: cpu value %d: %w", i+1, err)
			}
			v[i] = n
		}
		return MachineCPU{
			User: v[0], Nice: v[1], System: v[2], Idle: v[3],
			IOWait: v[4], IRQ: v[5], SoftIRQ: v[6], Steal: v[7],
		}, nil
	}
	if err := sc.Err(); err != nil {
		return MachineCPU{}, fmt.Errorf("/proc/stat: %w", err)
	}
	return MachineCPU{}, fmt.Errorf("/proc/stat: no aggregate cpu line")
}

// ParseProcPidStat returns utime + stime, in clock ticks, from the contents
// of /proc/<pid>/stat. The command name (field 2) may hold spaces and
// parentheses, so fields are counted from its last ')'.
func ParseProcPidStat(data []byte) (uint64, error) {
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return 0, fmt.Errorf("pid stat: no command name")
	}
	// After ") " come field 3 (state) onwards; utime and stime are fields
	// 14 and 15, so indices 11 and 12 here.
	fields := strings.Fields(string(data[end+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("pid stat: %d fields after the command name, want at least 13", len(fields))
	}
	var sum uint64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("pid stat: utime/stime: %w", err)
		}
		sum += n
	}
	return sum, nil
}

// clockTicks is USER_HZ, the unit of /proc's CPU times. The kernel passes it
// to every program as AT_CLKTCK; it is 100 wherever that cannot be read.
var clockTicks = sync.OnceValue(func() float64 {
	const atClkTck = 17 // AT_CLKTCK in <elf.h>
	if auxv, err := unix.Auxv(); err == nil {
		for _, kv := range auxv {
			if kv[0] == atClkTck && kv[1] > 0 {
				return float64(kv[1])
			}
		}
	}
	return 100
})

// cpuSnapshot is the CPU time used so far by the machine and by a set of
// processes.
type cpuSnapshot struct {
	at      time.Time
	machine uint64 // busy ticks, all cores
	// polling is the time CPUs spent polling in idle (cpuidle's POLL
	// state): /proc/stat counts it as idle, but a
	// polling CPU is spent, on a VM as much as a busy one. overlayd's
	// --idle-poll makes idle CPUs poll while packets flow.
	polling time.Duration
	procs   uint64 // utime+stime ticks of the processes
	// threads is the scheduler's account of the forwarders' threads.
	threads threadSet
}

// cpuUsage is what was used between two snapshots.
type cpuUsage struct {
	Wall    time.Duration
	Machine float64 // seconds of CPU, all cores, polling in idle included
	Procs   float64 // seconds of CPU of the processes
	// Forwarders is the scheduler's account of the forwarding processes'
	// threads (overlayd's or flanneld's); zero for kernel systems.
	Forwarders ThreadStats
}

// takeSnapshot reads /proc now for the testbed's processes, and the
// forwarders' threads if threads. A process that has gone is an error: its
// CPU time could no longer be counted.
func takeSnapshot(tb Testbed, threads bool) (cpuSnapshot, error) {
	pids := tb.OverlaydPIDs()
	s := cpuSnapshot{at: time.Now()}
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s, err
	}
	m, err := ParseProcStat(data)
	if err != nil {
		return s, err
	}
	s.machine = m.Busy()
	idle, err := idlepoll.ReadIdleCounters("")
	if err != nil {
		return s, err
	}
	s.polling = idle.Polling
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return s, fmt.Errorf("CPU time of pid %d: %w", pid, err)
		}
		ticks, err := ParseProcPidStat(data)
		if err != nil {
			return s, fmt.Errorf("CPU time of pid %d: %w", pid, err)
		}
		s.procs += ticks
	}
	if threads {
		s.threads, err = readThreads("/proc", tb.ForwarderPIDs())
	}
	return s, err
}

// since is the usage from earlier to s.
func (s cpuSnapshot) since(earlier cpuSnapshot) cpuUsage {
	hz := clockTicks()
	return cpuUsage{
		Wall:    s.at.Sub(earlier.at),
		Machine: float64(s.machine-earlier.machine)/hz + (s.polling - earlier.polling).Seconds(),
		Procs:   float64(s.procs-earlier.procs) / hz,

		Forwarders: s.threads.since(earlier.threads),
	}
}
