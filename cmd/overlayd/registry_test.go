package main

import (
	"encoding/json"
	"testing"

	"github.com/overlayd/overlayd/subnet"
)

// TestEffectiveConfigRoundTrips: what `config get --json` prints is a config
// `config put` takes (nothing ignored: what overlayd ignores is left out)
// and that means the same network to overlayd.
func TestEffectiveConfigRoundTrips(t *testing.T) {
	for _, tt := range []struct{ name, raw string }{
		{"defaults", `{"Network":"100.96.0.0/16"}`},
		{"small network", `{"Network":"100.96.0.0/22"}`},
		{"udp set", `{"Network":"100.96.0.0/16","SubnetLen":20,"SubnetMin":"100.96.32.0","SubnetMax":"100.96.64.0","Backend":{"Type":"udp","Port":8299}}`},
		{"vxlan", `{"Network":"100.96.0.0/16","Backend":{"Type":"vxlan"}}`},
		{"vxlan VNI 0", `{"Network":"100.96.0.0/16","Backend":{"Type":"vxlan","VNI":0,"Port":4789,"MTU":1400}}`},
		{"host-gw", `{"Network":"100.96.0.0/16","Backend":{"Type":"host-gw"}}`},
		{"ignored fields", `{"Network":"100.96.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:100::/56","Backend":{"Type":"vxlan","DirectRouting":true}}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			want, err := subnet.ParseConfig([]byte(tt.raw))
			if err != nil {
				t.Fatal(err)
			}
			out, err := json.Marshal(effectiveConfig(want))
			if err != nil {
				t.Fatal(err)
			}
			got, err := subnet.ParseConfig(out)
			if err != nil {
				t.Fatalf("config put would refuse %s: %v", out, err)
			}
			if got.Ignored != nil {
				t.Fatalf("config put would refuse %s: %v", out, got.Ignored)
			}
			if got.Network != want.Network || got.SubnetLen != want.SubnetLen || got.SubnetMin != want.SubnetMin ||
				got.SubnetMax != want.SubnetMax || got.Backend.Type != want.Backend.Type || got.Backend.Port != want.Backend.Port ||
				got.Backend.VNI != want.Backend.VNI || got.Backend.MTU != want.Backend.MTU {
				t.Errorf("%s reads back as\n%+v\nwant\n%+v", out, got, want)
			}
		})
	}
}
