//go:build !linux

package traffic

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/overlayd/overlayd/perf/netns"
)

// Ping needs Linux; see ping_linux.go.
func Ping(ctx context.Context, ns *netns.NS, dst netip.Addr, size int, df bool, timeout time.Duration) (PingResult, error) {
	return PingResult{}, fmt.Errorf("ping %s: %w", dst, errors.ErrUnsupported)
}

// PingRTT needs Linux; see ping_linux.go.
func PingRTT(ctx context.Context, ns *netns.NS, dst netip.Addr, size, count int, interval, timeout time.Duration) (PingStats, error) {
	return PingStats{}, fmt.Errorf("ping %s: %w", dst, errors.ErrUnsupported)
}
