package idlepoll

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// IdleCounters are cpuidle's counters, summed over every CPU.
type IdleCounters struct {
	// Polling is the time spent in idle states without an exit latency:
	// the CPU polls for work there, and spends itself doing so.
	Polling time.Duration
	// Halts counts the entries into the other states (halt and deeper),
	// which a held request keeps CPUs out of.
	Halts uint64
	// HaltStates is false where there are no such states (no cpuidle,
	// or polling only): there is nothing to keep CPUs out of.
	HaltStates bool
}

// ReadIdleCounters reads cpuidle's sysfs counters under root (the CPUs'
// directory, /sys/devices/system/cpu when empty).
func ReadIdleCounters(root string) (IdleCounters, error) {
	if root == "" {
		root = "/sys/devices/system/cpu"
	}
	var c IdleCounters
	states, _ := filepath.Glob(filepath.Join(root, "cpu[0-9]*", "cpuidle", "state[0-9]*"))
	for _, s := range states {
		lat, err := readCounter(s, "latency")
		if err != nil {
			return c, err
		}
		if lat == 0 {
			us, err := readCounter(s, "time")
			if err != nil {
				return c, err
			}
			c.Polling += time.Duration(us) * time.Microsecond
			continue
		}
		n, err := readCounter(s, "usage")
		if err != nil {
			return c, err
		}
		c.Halts += n
		c.HaltStates = true
	}
	return c, nil
}

func readCounter(state, name string) (uint64, error) {
	data, err := os.ReadFile(filepath.Join(state, name))
	if err != nil {
		return 0, fmt.Errorf("cpuidle: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cpuidle: %s/%s: %w", state, name, err)
	}
	return n, nil
}
