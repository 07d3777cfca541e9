package traffic

import (
	"fmt"
	"net/netip"
	"time"
)

// Request/response ("RR") measures latency the way netperf's TCP_RR and
// UDP_RR do: a client sends a small request, waits for the server to echo
// it back, and only then sends the next one, for a fixed time. One
// transaction is in flight at any moment, so the transaction rate is the
// inverse of the mean round trip, and every round trip is recorded in a
// [Histogram] for its percentiles.
//
// Both ends use blocking sockets through raw system calls, so a waiting end
// sleeps in the kernel and is woken directly by the packet, as netperf and
// sockperf are, with neither the Go netpoller's hand-off nor the runtime's
// (rr_linux.go): what is measured is the path, not this tool's scheduling.
// On the 2-core bench machine the runtime's hand-offs had added ~60% to
// overlayd's round trip and nothing to kernel VXLAN's, whose path left a
// core free for them; sockperf agrees with this tool within noise.

// RR defaults.
const (
	DefaultRRSize    = 64
	DefaultRRTimeout = 50 * time.Millisecond
	DefaultRRWait    = 5 * time.Second
	// rrStall bounds the wait for a TCP reply: TCP retransmits lost
	// segments itself, so only a broken path takes this long.
	rrStall = 10 * time.Second
	// rrPoll is how often a waiting server checks whether it was closed.
	rrPoll = 100 * time.Millisecond
	// rrMaxSize bounds a request: one UDP datagram.
	rrMaxSize = 65507
)

// RROptions configure a request/response client.
type RROptions struct {
	Protocol string         // "tcp" or "udp"
	Addr     netip.AddrPort // the server, IPv4
	Size     int            // bytes in each request and response, at least 8; 0: DefaultRRSize
	Duration time.Duration  // of the timed transactions; must be positive
	// Timeout is how long a UDP request waits for its response before it
	// counts as lost and the next is sent; 0: DefaultRRTimeout.
	Timeout time.Duration
	// Wait is how long DialRR waits for the server to answer a first,
	// untimed transaction (it may still be starting); 0: DefaultRRWait.
	Wait time.Duration
}

func (o RROptions) withDefaults() (RROptions, error) {
	if o.Size == 0 {
		o.Size = DefaultRRSize
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultRRTimeout
	}
	if o.Wait == 0 {
		o.Wait = DefaultRRWait
	}
	switch {
	case o.Protocol != "tcp" && o.Protocol != "udp":
		return o, fmt.Errorf("rr: protocol %q: want tcp or udp", o.Protocol)
	case !o.Addr.Addr().Unmap().Is4() || o.Addr.Port() == 0:
		return o, fmt.Errorf("rr: server %s: want an IPv4 address and a port", o.Addr)
	case o.Size < 8 || o.Size > rrMaxSize:
		return o, fmt.Errorf("rr: size %d out of range [8, %d]", o.Size, rrMaxSize)
	case o.Duration <= 0:
		return o, fmt.Errorf("rr: duration %s: want a positive one", o.Duration)
	case o.Timeout < 0 || o.Wait < 0:
		return o, fmt.Errorf("rr: negative timeout or wait")
	}
	o.Addr = netip.AddrPortFrom(o.Addr.Addr().Unmap(), o.Addr.Port())
	return o, nil
}

// RRResult is what one request/response run measured.
type RRResult struct {
	Protocol string  `json:"protocol"`
	Size     int     `json:"size"`
	Seconds  float64 `json:"seconds"` // of the timed transactions
	// Transactions answered; for UDP, in time (Timeouts are not).
	Transactions int64        `json:"transactions"`
	Timeouts     int64        `json:"timeouts"` // UDP requests that got no response in time
	TPS          float64      `json:"tps"`      // Transactions per second
	RTT          LatencyStats `json:"rtt"`      // of the answered transactions
}

// result turns a run's counts into an RRResult.
func (o RROptions) result(h *Histogram, timeouts int64, elapsed time.Duration) RRResult {
	r := RRResult{
		Protocol:     o.Protocol,
		Size:         o.Size,
		Seconds:      elapsed.Seconds(),
		Transactions: int64(h.Count()),
		Timeouts:     timeouts,
		RTT:          h.Stats(),
	}
	if elapsed > 0 {
		r.TPS = float64(r.Transactions) / elapsed.Seconds()
	}
	return r
}
