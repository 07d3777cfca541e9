package topo

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/overlayd/overlayd/perf/netns"
)

// Shape makes an underlay link less perfect than a veth: added delay and
// random loss (tc netem) and a bandwidth cap (tc tbf), applied to what
// every host sends on its underlay interface, so both directions see it.
// The zero Shape leaves the veth as it is.
type Shape struct {
	Delay   time.Duration // one way, per host's egress
	LossPct float64       // of the packets each host sends, 0 to 100
	RateBit int64         // bits per second; 0: no cap
}

// IsZero reports whether s leaves the link alone.
func (s Shape) IsZero() bool { return s == Shape{} }

func (s Shape) String() string {
	var parts []string
	if s.Delay > 0 {
		parts = append(parts, "delay "+s.Delay.String())
	}
	if s.LossPct > 0 {
		parts = append(parts, "loss "+strconv.FormatFloat(s.LossPct, 'g', -1, 64)+"%")
	}
	if s.RateBit > 0 {
		parts = append(parts, "rate "+FormatRate(s.RateBit))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func (s Shape) validate() error {
	switch {
	case s.Delay < 0 || s.Delay > 10*time.Second:
		return fmt.Errorf("topo: delay %s out of range [0, 10s]", s.Delay)
	case s.LossPct < 0 || s.LossPct > 100:
		return fmt.Errorf("topo: loss %g%% out of range [0, 100]", s.LossPct)
	case s.RateBit < 0:
		return fmt.Errorf("topo: rate %d bit/s is negative", s.RateBit)
	case s.RateBit > 0 && s.RateBit < 8000:
		return fmt.Errorf("topo: rate %d bit/s: want at least 8kbit", s.RateBit)
	}
	return nil
}

// netemLimit is netem's queue, in packets: its default of 1000 would drop
// on its own at 10 Gbit/s and a few milliseconds, which is not the loss
// asked for.
const netemLimit = 100000

// apply installs the shape on dev in ns: netem at the root when there is
// delay or loss, with tbf below it for a rate cap (the layout netem's
// documentation gives), or tbf alone.
func (s Shape) apply(ctx context.Context, ns *netns.NS, dev string, mtu int) error {
	if s.IsZero() {
		return nil
	}
	tc := func(kind string, args ...string) error {
		_, err := ns.Exec(ctx, "tc", args...)
		switch {
		case err == nil:
			return nil
		case strings.Contains(err.Error(), "qdisc kind is unknown"):
			// tc's own message does not say which kind.
			return fmt.Errorf("topo: this kernel has no %s qdisc (CONFIG_NET_SCH_%s): %w", kind, strings.ToUpper(kind), err)
		default:
			return fmt.Errorf("topo: %w", err)
		}
	}
	parent := []string{"root"}
	if s.Delay > 0 || s.LossPct > 0 {
		args := []string{"qdisc", "add", "dev", dev, "root", "handle", "1:", "netem", "limit", strconv.Itoa(netemLimit)}
		if s.Delay > 0 {
			args = append(args, "delay", strconv.FormatInt(s.Delay.Microseconds(), 10)+"us")
		}
		if s.LossPct > 0 {
			args = append(args, "loss", strconv.FormatFloat(s.LossPct, 'f', -1, 64)+"%")
		}
		if err := tc("netem", args...); err != nil {
			return err
		}
		parent = []string{"parent", "1:1"}
	}
	if s.RateBit > 0 {
		// The bucket holds 1 ms at the rate (at least a few frames, so that
		// a GSO super-frame fits), and the queue 5 ms of traffic.
		burst := max(s.RateBit/8/1000, int64(4*max(mtu, 65536)))
		args := append([]string{"qdisc", "add", "dev", dev}, parent...)
		args = append(args, "handle", "10:", "tbf", "rate", strconv.FormatInt(s.RateBit, 10)+"bit",
			"burst", strconv.FormatInt(burst, 10), "latency", "5ms")
		if err := tc("tbf", args...); err != nil {
			return err
		}
	}
	return nil
}

// ParseRate reads a rate as tc writes it: a number with an optional
// k/m/g/t prefix and "bit" ("10gbit", "500mbit", "1e9"); bare numbers are
// bits per second.
func ParseRate(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "bit"), "bps")
	mult := 1.0
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k':
			mult, t = 1e3, t[:n-1]
		case 'm':
			mult, t = 1e6, t[:n-1]
		case 'g':
			mult, t = 1e9, t[:n-1]
		case 't':
			mult, t = 1e12, t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("rate %q: want e.g. 10gbit or 500mbit", s)
	}
	return int64(v * mult), nil
}

// FormatRate writes bits per second as tc would: "10gbit", "500mbit".
func FormatRate(bit int64) string {
	for _, u := range []struct {
		div  int64
		name string
	}{{1e12, "tbit"}, {1e9, "gbit"}, {1e6, "mbit"}, {1e3, "kbit"}} {
		if bit >= u.div && bit%u.div == 0 {
			return strconv.FormatInt(bit/u.div, 10) + u.name
		}
	}
	return strconv.FormatInt(bit, 10) + "bit"
}
