package idlepoll

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// CPULatency is the kernel's PM QoS CPU latency request: while its file is
// open with a limit of 0 µs written to it, the cpuidle governor picks no
// idle state with an exit latency, so idle CPUs poll. Closing the file
// drops the request; so does the process's exit, however it ends.
type CPULatency struct {
	Path string // default /dev/cpu_dma_latency
	f    *os.File
}

// Hold opens the request with a limit of 0 µs.
func (c *CPULatency) Hold() error {
	path := c.Path
	if path == "" {
		path = "/dev/cpu_dma_latency"
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open PM QoS CPU latency request: %w", err)
	}
	// The kernel takes the limit as a native s32 (or a hex string).
	var limit [4]byte
	binary.NativeEndian.PutUint32(limit[:], 0)
	if _, err := f.Write(limit[:]); err != nil {
		f.Close()
		return fmt.Errorf("write PM QoS CPU latency limit to %s: %w", path, err)
	}
	c.f = f
	return nil
}

// Release closes the request.
func (c *CPULatency) Release() error {
	if c.f == nil {
		return nil
	}
	err := c.f.Close()
	c.f = nil
	return err
}

// Holders lists the processes that have the CPU latency request file open,
// each a request of its own: what keeps CPUs polling besides overlayd.
func Holders() []int {
	var pids []int
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err == nil && target == "/dev/cpu_dma_latency" {
			pid, _ := strconv.Atoi(strings.Split(fd, "/")[2])
			if !slices.Contains(pids, pid) {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}
