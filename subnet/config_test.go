package subnet

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParseConfigDefaults(t *testing.T) {
	tests := []struct {
		name string
		json string
		want Config // Backend.Raw is not compared
	}{
		{
			name: "udp when Backend is missing, as flannel's code does",
			json: `{"Network":"100.96.0.0/16"}`,
			want: Config{
				Network: pfx("100.96.0.0/16"), SubnetLen: 24,
				SubnetMin: addr("100.96.1.0"), SubnetMax: addr("100.96.255.0"),
				EnableIPv4: true,
				Backend:    BackendConfig{Type: "udp", Port: 8285},
			},
		},
		{
			name: "small network: SubnetLen is prefix+2",
			json: `{"Network":"100.96.0.0/26","Backend":{"Type":"udp","Port":9000}}`,
			want: Config{
				Network: pfx("100.96.0.0/26"), SubnetLen: 28,
				SubnetMin: addr("100.96.0.16"), SubnetMax: addr("100.96.0.48"),
				EnableIPv4: true,
				Backend:    BackendConfig{Type: "udp", Port: 9000},
			},
		},
		{
			name: "/22 still gets /24s",
			json: `{"Network":"100.96.4.0/22"}`,
			want: Config{
				Network: pfx("100.96.4.0/22"), SubnetLen: 24,
				SubnetMin: addr("100.96.5.0"), SubnetMax: addr("100.96.7.0"),
				EnableIPv4: true,
				Backend:    BackendConfig{Type: "udp", Port: 8285},
			},
		},
		{
			name: "vxlan defaults: port 8472, VNI 1",
			json: `{"Network":"100.96.0.0/16","SubnetLen":26,"Backend":{"Type":"vxlan"}}`,
			want: Config{
				Network: pfx("100.96.0.0/16"), SubnetLen: 26,
				SubnetMin: addr("100.96.0.64"), SubnetMax: addr("100.96.255.192"),
				EnableIPv4: true,
				Backend:    BackendConfig{Type: "vxlan", Port: 8472, VNI: 1},
			},
		},
		{
			name: "vxlan keys are case-insensitive, an explicit VNI 0 stays",
			json: `{"network":"100.96.0.0/16","backend":{"type":"vxlan","vni":0,"port":4789,"mtu":9000}}`,
			want: Config{
				Network: pfx("100.96.0.0/16"), SubnetLen: 24,
				SubnetMin: addr("100.96.1.0"), SubnetMax: addr("100.96.255.0"),
				EnableIPv4: true,
				Backend:    BackendConfig{Type: "vxlan", Port: 4789, VNI: 0, MTU: 9000},
			},
		},
		{
			name: "explicit range, host bits of Network cleared as flannel does",
			json: `{"Network":"100.96.7.1/16","SubnetMin":"100.96.10.0","SubnetMax":"100.96.20.0","Backend":{"Type":"host-gw"}}`,
			want: Config{
				Network: pfx("100.96.0.0/16"), SubnetLen: 24,
				SubnetMin: addr("100.96.10.0"), SubnetMax: addr("100.96.20.0"),
				EnableIPv4: true,
				Backend:    BackendConfig{Type: "host-gw"},
			},
		},
		{
			name: "dual-stack flannel config is accepted, its IPv6 fields ignored",
			json: `{"Network":"100.96.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:100::/48","Backend":{"Type":"udp","Port":0}}`,
			want: Config{
				Network: pfx("100.96.0.0/16"), SubnetLen: 24,
				SubnetMin: addr("100.96.1.0"), SubnetMax: addr("100.96.255.0"),
				EnableIPv4: true, EnableIPv6: true, IPv6Network: pfx("fd00:100::/48"),
				Backend: BackendConfig{Type: "udp", Port: 8285},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tt.json))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			got.Backend.Raw = nil
			if tt.want.EnableIPv6 != (got.Ignored != nil) {
				t.Errorf("Ignored = %v", got.Ignored)
			}
			got.Ignored = nil
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", *got, tt.want)
			}
		})
	}
}

func TestParseConfigKeepsRawBackend(t *testing.T) {
	raw := `{"Type":"vxlan","DirectRouting":true}`
	c, err := ParseConfig([]byte(`{"Network":"100.96.0.0/16","Backend":` + raw + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Backend.Raw) != raw {
		t.Errorf("Raw = %s, want %s", c.Backend.Raw, raw)
	}
}

// Every error names its field and says how to fix it.
func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		json  string
		field string
		want  string // a part of the message
	}{
		{`{"Network":"100.96.0.0/16","SubnetLen":31}`, "SubnetLen", `31 is larger than 30; use 24 for a /16 Network`},
		{`{"Network":"100.96.0.0/16","SubnetLen":17}`, "SubnetLen", `use 18 to 30`},
		{`{"Network":"100.96.0.0/16","SubnetLen":-1}`, "SubnetLen", `negative`},
		{`{"Network":"100.96.0.0/16","SubnetLen":"24"}`, "SubnetLen", `must be a JSON integer, not string`},
		{`{"SubnetLen":24}`, "Network", `missing`},
		{`{"Network":"100.96.0.0"}`, "Network", `not an IPv4 CIDR`},
		{`{"Network":"fd00::/48"}`, "Network", `not an IPv4 CIDR`},
		{`{"Network":"100.96.0.0/29"}`, "Network", `/28 or larger`},
		{`{"Network":16}`, "Network", `must be a JSON string, not number`},
		{`{"Network":"100.96.0.0/16","SubnetMin":"100.97.0.0"}`, "SubnetMin", `outside Network 100.96.0.0/16`},
		{`{"Network":"100.96.0.0/16","SubnetMin":"100.96.1.5"}`, "SubnetMin", `not on a /24 boundary (SubnetLen); use 100.96.1.0`},
		{`{"Network":"100.96.0.0/16","SubnetMax":"x"}`, "SubnetMax", `not an IPv4 address`},
		{`{"Network":"100.96.0.0/16","SubnetMin":"100.96.9.0","SubnetMax":"100.96.2.0"}`, "SubnetMax", `below SubnetMin`},
		{`{"Network":"100.96.0.0/16","EnableIPv4":false}`, "EnableIPv4", `IPv4 subnets only`},
		{`{"Network":"100.96.0.0/16","EnableIPv4":"yes"}`, "EnableIPv4", `boolean`},
		{`{"Network":"100.96.0.0/16","EnableIPv6":true}`, "IPv6Network", `not an IPv6 CIDR`},
		{`{"Network":"100.96.0.0/16","Backend":{"Type":"wireguard"}}`, "Backend.Type", `"wireguard" is not supported by overlayd; use "udp", "vxlan" or "host-gw"`},
		{`{"Network":"100.96.0.0/16","Backend":{"Type":"VXLAN"}}`, "Backend.Type", `not supported`},
		{`{"Network":"100.96.0.0/16","Backend":{}}`, "Backend.Type", `missing`},
		{`{"Network":"100.96.0.0/16","Backend":{"Type":"udp","Port":70000}}`, "Backend.Port", `not a UDP port`},
		{`{"Network":"100.96.0.0/16","Backend":{"Type":"udp","Port":"8285"}}`, "Backend.Port", `must be a JSON integer`},
		{`{"Network":"100.96.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}`, "Backend.VNI", `24-bit`},
		{`{"Network":"100.96.0.0/16","Backend":{"Type":"vxlan","MTU":-1}}`, "Backend.MTU", `not an MTU`},
		{`{"Network":"100.96.0.0/16","Backend":"udp"}`, "Backend", `must be a JSON object, not string`},
		{`{"Network":"100.96.0.0/16","Backend":null}`, "Backend", `null is not a backend`},
		{`{"Network":"100.96.0.0/16",}`, "", `invalid JSON at byte`},
		{``, "", `invalid JSON`},
		{`[]`, "", `must be a JSON object, not array`},
	}
	for _, tt := range tests {
		t.Run(tt.json, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.json))
			if err == nil {
				t.Fatal("ParseConfig succeeded, want an error")
			}
			ce, ok := errors.AsType[*ConfigError](err)
			if !ok {
				t.Fatalf("error %v is a %T, want *ConfigError", err, err)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("errors.Is(%v, ErrInvalidConfig) = false", err)
			}
			if ce.Field != tt.field {
				t.Errorf("Field = %q, want %q (error: %v)", ce.Field, tt.field, err)
			}
			if tt.field != "" && !strings.HasPrefix(err.Error(), `field "`+tt.field+`": `) {
				t.Errorf("error %q does not start by naming field %q", err, tt.field)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestConfigCompatible(t *testing.T) {
	c, err := ParseConfig([]byte(`{"Network":"100.96.0.0/16","SubnetMin":"100.96.10.0","SubnetMax":"100.96.20.0"}`))
	if err != nil {
		t.Fatal(err)
	}
	for sn, want := range map[string]bool{
		"100.96.10.0/24": true,
		"100.96.20.0/24": true,
		"100.96.15.0/24": true,
		"100.96.9.0/24":  false, // below SubnetMin
		"100.96.21.0/24": false, // above SubnetMax
		"100.96.15.0/25": false, // wrong length
		"100.96.15.1/24": false, // not aligned
		"100.97.15.0/24": false, // outside the network
	} {
		if got := c.Compatible(pfx(sn)); got != want {
			t.Errorf("Compatible(%s) = %v, want %v", sn, got, want)
		}
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }
