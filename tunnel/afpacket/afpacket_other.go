//go:build !linux

package afpacket

import (
	"fmt"
	"net/netip"

	"github.com/overlayd/overlayd/tunnel/underlay"
)

type shared struct{}

// Listen needs Linux's AF_PACKET sockets.
func Listen(iface string, laddr netip.AddrPort, opts Options) (underlay.Conn, error) {
	return nil, fmt.Errorf("afpacket: listen on %s %v: %w", iface, laddr, ErrNotSupported)
}

// RemoveStaleGuard has nothing to remove off Linux.
func RemoveStaleGuard(iface string, laddr netip.AddrPort) error { return nil }
