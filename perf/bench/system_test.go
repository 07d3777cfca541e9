package bench

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestLookupSystem(t *testing.T) {
	for _, name := range DefaultSystems {
		s, err := LookupSystem(name)
		if err != nil {
			t.Fatal(err)
		}
		if s.Name() != name {
			t.Errorf("LookupSystem(%q).Name() = %q", name, s.Name())
		}
	}
	if _, err := LookupSystem("afpacket-typo"); err == nil {
		t.Error("an unknown system was found")
	}
	names := SystemNames()
	if !slices.Contains(names, Baseline) {
		t.Errorf("systems %v lack the baseline %s", names, Baseline)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			t.Errorf("system %q listed twice", n)
		}
		seen[n] = true
	}
}

func TestAddressPlan(t *testing.T) {
	if got, want := hostSubnet(1), netip.MustParsePrefix("100.96.2.0/24"); got != want {
		t.Errorf("hostSubnet(1) = %v, want %v", got, want)
	}
	if got := vtepMAC(0); got != "02:00:00:00:00:01" {
		t.Errorf("vtepMAC(0) = %s: want a fixed, locally administered unicast MAC", got)
	}
}

func TestOptionsDefaults(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	o, err := Options{}.withDefaults(start)
	if err != nil {
		t.Fatal(err)
	}
	if o.Duration != 10*time.Second || o.Rounds != 3 || !slices.Equal(o.Systems, DefaultSystems) || o.Out != DefaultOut(start) || o.Progress == nil {
		t.Errorf("defaults: %+v", o)
	}
	for _, bad := range []Options{{Duration: 1500 * time.Millisecond}, {Duration: -time.Second}, {Rounds: -1}} {
		if _, err := bad.withDefaults(start); err == nil {
			t.Errorf("%+v: want an error", bad)
		}
	}
}
