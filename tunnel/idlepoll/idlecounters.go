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
	// Polling is the time spent in the polling state (cpuidle's "POLL",
	// x86's): the CPU polls for work there, and spends itself doing so.
	Polling time.Duration
	// Halts counts the entries into the other states (halt and deeper),
	// which a held request keeps CPUs out of.
	Halts uint64
	// CanPoll is true where the CPUs have a polling state as well as
	// others: only there does a held request make idle CPUs poll (on
	// arm64, whose shallowest state is WFI, it does not).
	CanPoll bool
}

// ReadIdleCounters reads cpuidle's sysfs counters under root (the CPUs'
// directory, /sys/devices/system/cpu when empty).
func ReadIdleCounters(root string) (IdleCounters, error) {
	if root == "" {
		root = "/sys/devices/system/cpu"
	}
	var c IdleCounters
	var polls, halts bool
	states, _ := filepath.Glob(filepath.Join(root, "cpu[0-9]*", "cpuidle", "state[0-9]*"))
	for _, s := range states {
		name, err := os.ReadFile(filepath.Join(s, "name"))
		if err != nil {
			return c, fmt.Errorf("cpuidle: %w", err)
		}
		if strings.TrimSpace(string(name)) == "POLL" {
			us, err := readCounter(s, "time")
			if err != nil {
				return c, err
			}
			c.Polling += time.Duration(us) * time.Microsecond
			polls = true
			continue
		}
		n, err := readCounter(s, "usage")
		if err != nil {
			return c, err
		}
		c.Halts += n
		halts = true
	}
	c.CanPoll = polls && halts
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
