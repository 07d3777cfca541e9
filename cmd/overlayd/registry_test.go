package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
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

// The control socket a daemon was given is found on its command line,
// in any of the flag's spellings, else in its environment.
func TestControlSocketOf(t *testing.T) {
	for _, tc := range []struct {
		cmdline, environ []string
		want             string
	}{
		{[]string{"overlayd", "run", "--control-socket", "/run/a.sock"}, nil, "/run/a.sock"},
		{[]string{"/usr/bin/overlayd", "-control-socket=/run/b.sock", "--iface", "eth0"}, nil, "/run/b.sock"},
		{[]string{"overlayd", "--control-socket=/run/c.sock"}, []string{"OVERLAYD_CONTROL_SOCKET=/run/env.sock"}, "/run/c.sock"},
		{[]string{"overlayd", "run"}, []string{"PATH=/bin", "OVERLAYD_CONTROL_SOCKET=/run/env.sock"}, "/run/env.sock"},
		{[]string{"overlayd"}, []string{"FLANNELD_CONTROL_SOCKET=@x"}, "@x"},
		{[]string{"overlayd", "--control-socket", "/run/first.sock", "--control-socket=/run/last.sock"}, nil, "/run/last.sock"},
		{[]string{"overlayd"}, []string{"FLANNELD_CONTROL_SOCKET=/run/f.sock", "OVERLAYD_CONTROL_SOCKET=/run/o.sock"}, "/run/o.sock"},
		{[]string{"overlayd"}, []string{"OVERLAYD_CONTROL_SOCKET=", "FLANNELD_CONTROL_SOCKET=/run/f.sock"}, ""}, // set empty: the default
		{[]string{"overlayd", "--control-socket", "run/rel.sock"}, nil, "/srv/overlayd/run/rel.sock"},
		{[]string{"overlayd", "--", "--control-socket", "/run/no.sock"}, nil, ""},
		{[]string{"overlayd", "--control-socket-x", "/run/no.sock"}, nil, ""},
		{[]string{"overlayd", "run"}, nil, ""},
	} {
		proc := t.TempDir()
		dir := filepath.Join(proc, "77")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		write := func(name string, parts []string) {
			data := strings.Join(parts, "\x00")
			if len(parts) > 0 {
				data += "\x00"
			}
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write("cmdline", tc.cmdline)
		write("environ", tc.environ)
		if err := os.Symlink("/srv/overlayd", filepath.Join(dir, "cwd")); err != nil {
			t.Fatal(err)
		}
		got, found := controlSocketOf(proc, 77)
		if got != tc.want || found != (tc.want != "") {
			t.Errorf("cmdline %q, environ %q: %q, %v; want %q", tc.cmdline, tc.environ, got, found, tc.want)
		}
	}
	if _, found := controlSocketOf(t.TempDir(), 77); found {
		t.Error("a process that is gone has a control socket")
	}
}
