//go:build !linux && !darwin

package tun

import (
	"errors"
	"fmt"
)

// CreateWater is not available on this platform.
func CreateWater(name string) (Device, error) {
	return nil, fmt.Errorf("tun: create %q with water: %w", name, errors.ErrUnsupported)
}
