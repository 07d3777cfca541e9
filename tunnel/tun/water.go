//go:build linux || darwin

package tun

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"

	"github.com/songgao/water"
)

var _ Device = (*waterDevice)(nil)

// CreateWater opens the TUN interface name through github.com/songgao/water,
// the portable fallback: one packet per system call, so BatchSize is 1 and a
// Read returns one packet however many buffers it is given. On Linux the
// interface is opened with IFF_TUN|IFF_NO_PI, single queue.
func CreateWater(name string) (Device, error) {
	cfg := water.Config{DeviceType: water.TUN}
	cfg.Name = name
	ifce, err := water.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("tun: create %q with water: %w", name, err)
	}
	return &waterDevice{ifce: ifce}, nil
}

// waterDevice adapts a water.Interface to Device.
type waterDevice struct {
	ifce   *water.Interface
	closed atomic.Bool
}

func (d *waterDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	n, err := d.ifce.Read(bufs[0][offset:])
	if err != nil {
		return 0, d.fail("read", err)
	}
	sizes[0] = n
	return 1, nil
}

func (d *waterDevice) Write(bufs [][]byte, offset int) (int, error) {
	written := 0
	var refused []int
	var first error
	for i, buf := range bufs {
		if _, err := d.ifce.Write(buf[offset:]); err != nil {
			if d.closed.Load() || errors.Is(err, os.ErrClosed) {
				return written, os.ErrClosed
			}
			if refused == nil {
				first = err
			}
			refused = append(refused, i)
			continue
		}
		written++
	}
	if refused != nil {
		return written, &WriteError{Dropped: len(refused), Refused: refused, Err: first}
	}
	return written, nil
}

func (d *waterDevice) fail(op string, err error) error {
	if d.closed.Load() || errors.Is(err, os.ErrClosed) {
		return os.ErrClosed
	}
	return fmt.Errorf("tun: %s %s: %w", op, d.ifce.Name(), err)
}

func (d *waterDevice) BatchSize() int { return 1 }

func (d *waterDevice) Name() string { return d.ifce.Name() }

// MTU looks the interface up by name in the calling thread's network
// namespace (water keeps no socket to ask through).
func (d *waterDevice) MTU() (int, error) {
	if d.closed.Load() {
		return 0, os.ErrClosed
	}
	ifi, err := net.InterfaceByName(d.ifce.Name())
	if err != nil {
		return 0, fmt.Errorf("tun: get MTU of %s: %w", d.ifce.Name(), err)
	}
	return ifi.MTU, nil
}

func (d *waterDevice) Close() error {
	if d.closed.Swap(true) {
		return os.ErrClosed
	}
	if err := d.ifce.Close(); err != nil {
		return fmt.Errorf("tun: close %s: %w", d.ifce.Name(), err)
	}
	return nil
}
