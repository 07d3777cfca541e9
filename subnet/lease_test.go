package subnet

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

// The values flanneld v0.28.9 wrote to etcd (FLANNEL.md §3).
const (
	flanneldUDPLease    = `{"PublicIP":"198.18.0.1","PublicIPv6":null}`
	flanneldVXLANLease  = `{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"a6:d7:18:cf:e6:cb"}}`
	flanneldHostGWLease = `{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"host-gw"}`
)

func TestLeaseAttrsJSONMatchesFlanneld(t *testing.T) {
	pub := netip.MustParseAddr("198.18.0.1")
	tests := []struct {
		name  string
		attrs LeaseAttrs
		want  string
	}{
		{"udp", LeaseAttrs{PublicIP: pub}, flanneldUDPLease},
		{"vxlan", LeaseAttrs{PublicIP: pub, BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"a6:d7:18:cf:e6:cb"}`)}, flanneldVXLANLease},
		{"host-gw", LeaseAttrs{PublicIP: pub, BackendType: "host-gw"}, flanneldHostGWLease},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(tt.attrs)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("Marshal:\n got %s\nwant %s", got, tt.want)
			}
			var back LeaseAttrs
			if err := json.Unmarshal([]byte(tt.want), &back); err != nil {
				t.Fatal(err)
			}
			if !back.Equal(tt.attrs) {
				t.Errorf("Unmarshal(%s) = %+v, want %+v", tt.want, back, tt.attrs)
			}
		})
	}
}

func TestFlanneldUDPLeaseIsUDP(t *testing.T) {
	var a LeaseAttrs
	if err := json.Unmarshal([]byte(flanneldUDPLease), &a); err != nil {
		t.Fatal(err)
	}
	if a.PublicIP != netip.MustParseAddr("198.18.0.1") || a.PublicIPv6 != nil || a.BackendData != nil {
		t.Errorf("parsed %+v", a)
	}
	if a.BackendType != "" || a.Backend() != "udp" {
		t.Errorf("BackendType = %q, Backend() = %q; want \"\" and \"udp\"", a.BackendType, a.Backend())
	}
}

func TestLeaseAttrsEqual(t *testing.T) {
	v6a, v6b := netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::1")
	base := LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.0.1"), BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1}`)}
	same := base
	same.BackendData = json.RawMessage(`{"VNI":1}`)
	if !base.Equal(same) {
		t.Error("equal attrs reported different")
	}
	withV6a, withV6b := base, base
	withV6a.PublicIPv6, withV6b.PublicIPv6 = &v6a, &v6b
	if !withV6a.Equal(withV6b) || base.Equal(withV6a) {
		t.Error("PublicIPv6 is not compared by value")
	}
	other := base
	other.BackendData = json.RawMessage(`{"VNI":2}`)
	if base.Equal(other) {
		t.Error("different BackendData reported equal")
	}
}

func TestSubnetKeyRoundTrip(t *testing.T) {
	for _, s := range []string{"100.96.3.0/24", "100.96.0.0/16", "10.244.255.252/30", "0.0.0.0/0", "198.18.0.1/32"} {
		p := netip.MustParsePrefix(s)
		key := SubnetKey(p)
		if want := strings.Replace(s, "/", "-", 1); key != want {
			t.Errorf("SubnetKey(%s) = %q, want %q", s, key, want)
		}
		for _, k := range []string{key, "/coreos.com/network/subnets/" + key, key + "&fd00:100:0:3::-64"} {
			got, err := ParseSubnetKey(k)
			if err != nil || got != p {
				t.Errorf("ParseSubnetKey(%q) = %v, %v; want %v", k, got, err, p)
			}
		}
	}
}

func TestParseSubnetKeyRejects(t *testing.T) {
	for _, k := range []string{
		"", "100.96.3.0", "100.96.3.0-", "100.96.3.0-33", "100.96.3.0-024", "100.96.3.0-+24",
		"100.96.3.1-24", // host bits set
		"fd00::-64", "100.96.3.0/24", "100.96.03.0-24", "100.96.3.0-24&", "100.96.3.0-24&zz-64",
		"100.96.3.0-24&100.96.3.0-24", "100.96.3.0-24&fd00::-129", "/coreos.com/network/subnets/",
	} {
		if p, err := ParseSubnetKey(k); err == nil {
			t.Errorf("ParseSubnetKey(%q) = %v, want an error", k, p)
		}
	}
}

// FuzzParseSubnetKey checks that whatever parses is an IPv4 network
// address whose key parses back to it.
func FuzzParseSubnetKey(f *testing.F) {
	for _, s := range []string{"100.96.3.0-24", "/coreos.com/network/subnets/10.244.0.0-16", "100.96.3.0-24&fd00::-64", "1.2.3.4-32"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		p, err := ParseSubnetKey(key)
		if err != nil {
			return
		}
		if !p.Addr().Is4() || p.Masked() != p {
			t.Fatalf("ParseSubnetKey(%q) = %v: not an IPv4 network address", key, p)
		}
		back, err := ParseSubnetKey(SubnetKey(p))
		if err != nil || back != p {
			t.Fatalf("round trip of %v via %q = %v, %v", p, SubnetKey(p), back, err)
		}
	})
}

// FuzzParseConfig checks the invariants of every config that parses.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"Network":"100.96.0.0/16"}`,
		`{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"udp","Port":8285}}`,
		`{"Network":"100.96.0.0/26","SubnetMin":"100.96.0.16","SubnetMax":"100.96.0.48","Backend":{"Type":"vxlan","VNI":7}}`,
		`{"network":"100.96.0.0/12","subnetlen":30,"backend":{"type":"host-gw"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			if _, ok := err.(*ConfigError); !ok {
				t.Fatalf("error %v is a %T, want *ConfigError", err, err)
			}
			return
		}
		n := c.Network
		if !n.Addr().Is4() || n.Masked() != n || n.Bits() > 28 {
			t.Fatalf("Network %v", n)
		}
		if c.SubnetLen < n.Bits()+2 || c.SubnetLen > 30 {
			t.Fatalf("SubnetLen %d for %v", c.SubnetLen, n)
		}
		for _, a := range []netip.Addr{c.SubnetMin, c.SubnetMax} {
			if !c.Compatible(netip.PrefixFrom(a, c.SubnetLen)) {
				t.Fatalf("bound %v: not a compatible subnet of %+v", a, c)
			}
		}
		switch c.Backend.Type {
		case BackendUDP, BackendVXLAN:
			if c.Backend.Port < 1 || c.Backend.Port > 65535 {
				t.Fatalf("Backend.Port %d", c.Backend.Port)
			}
		case BackendHostGW:
		default:
			t.Fatalf("Backend.Type %q", c.Backend.Type)
		}
		if c.Backend.VNI < 0 || c.Backend.VNI >= 1<<24 {
			t.Fatalf("Backend.VNI %d", c.Backend.VNI)
		}
	})
}
