//go:build !linux

package idlepoll

import "errors"

// CPULatency is Linux's PM QoS CPU latency request; elsewhere Hold fails.
type CPULatency struct{ Path string }

// Hold fails: there is no PM QoS request to hold.
func (c *CPULatency) Hold() error { return errors.New("no PM QoS CPU latency request on this system") }

// Release does nothing.
func (c *CPULatency) Release() error { return nil }
