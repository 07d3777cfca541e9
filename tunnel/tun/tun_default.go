//go:build !linux

package tun

import (
	"errors"
	"fmt"
)

// Create is Linux only; elsewhere CreateWater is the way in.
func Create(name string, queues int, opts ...Option) ([]Device, error) {
	return nil, fmt.Errorf("tun: create %q: native TUN: %w", name, errors.ErrUnsupported)
}
