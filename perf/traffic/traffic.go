// Package traffic is overlayd's own traffic tooling for tests and reports:
// a ping that tells path-MTU answers apart ([Ping]) and a TCP transfer that
// proves the bytes arrived intact ([Transfer]). Both run between network
// namespaces from package netns, so no ping or iperf binary is needed.
package traffic

import "time"

// Gbps is the rate of moving bytes in d, in gigabits (10^9 bits) per second.
// It is 0 when d is not positive.
func Gbps(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) * 8 / d.Seconds() / 1e9
}
