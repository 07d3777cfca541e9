package topo_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/overlayd/overlayd/perf/topo"
)

func TestParseRate(t *testing.T) {
	for in, want := range map[string]int64{
		"10gbit":  10e9,
		"500mbit": 500e6,
		"1.5Gbit": 1.5e9,
		"64kbit":  64e3,
		"1e9":     1e9,
		"2500000": 2500000,
	} {
		got, err := topo.ParseRate(in)
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "fast", "-1gbit", "10gbyte"} {
		if got, err := topo.ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) = %d, want an error", in, got)
		}
	}
}

func TestFormatRate(t *testing.T) {
	for bit, want := range map[int64]string{10e9: "10gbit", 500e6: "500mbit", 1500e6: "1500mbit", 1234: "1234bit"} {
		if got := topo.FormatRate(bit); got != want {
			t.Errorf("FormatRate(%d) = %q, want %q", bit, got, want)
		}
	}
}

func TestShapeString(t *testing.T) {
	if got := (topo.Shape{}).String(); got != "none" {
		t.Errorf("zero Shape = %q, want none", got)
	}
	s := topo.Shape{Delay: time.Millisecond, LossPct: 0.1, RateBit: 10e9}
	if got, want := s.String(), "delay 1ms, loss 0.1%, rate 10gbit"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestShapeRejected(t *testing.T) {
	for _, s := range []topo.Shape{{Delay: -time.Millisecond}, {LossPct: 101}, {LossPct: -1}, {RateBit: 100}} {
		if c, err := topo.New(context.Background(), topo.Options{Hosts: 2, Shape: s}); err == nil {
			c.Close()
			t.Errorf("New with %+v succeeded, want an error", s)
		}
	}
}

// TestShapedUnderlay builds jumbo-frame links with a rate cap and checks
// both are on every host's eth0; delay and loss too where the kernel has
// netem, and otherwise that the error names what is missing.
func TestShapedUnderlay(t *testing.T) {
	c := newCluster(t, topo.Options{Hosts: 2, UnderlayMTU: 9000, Shape: topo.Shape{RateBit: 10e9}})
	ctx := context.Background()
	for _, h := range c.Hosts {
		out, err := h.NS.Exec(ctx, "tc", "qdisc", "show", "dev", "eth0")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "tbf") || !strings.Contains(string(out), "10Gbit") {
			t.Errorf("%s: no 10Gbit tbf on eth0:\n%s", h.NS.Name, out)
		}
		out, err = h.NS.Exec(ctx, "ip", "link", "show", "eth0")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "mtu 9000") {
			t.Errorf("%s: eth0 is not jumbo:\n%s", h.NS.Name, out)
		}
	}

	opts := topo.Options{Hosts: 2, Shape: topo.Shape{Delay: time.Millisecond, LossPct: 0.1, RateBit: 1e9}}
	opts.Prefix = c.Prefix + "n"
	n, err := topo.New(ctx, opts)
	if err != nil {
		if !strings.Contains(err.Error(), "no netem qdisc") {
			t.Fatalf("netem: %v; want it to work or to say the kernel has no netem", err)
		}
		t.Logf("this kernel has no netem: %v", err)
		return
	}
	defer n.Close()
	out, err := n.Hosts[0].NS.Exec(ctx, "tc", "qdisc", "show", "dev", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"netem", "delay 1ms", "loss 0.1%", "tbf"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("no %q on eth0:\n%s", want, out)
		}
	}
}
