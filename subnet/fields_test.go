package subnet

import (
	"errors"
	"strings"
	"testing"
)

// TestConfigIgnoredFields: a typo is named with the field it was meant to
// be, a flannel feature overlayd lacks is called unsupported, and a valid
// config has nothing ignored.
func TestConfigIgnoredFields(t *testing.T) {
	tests := []struct {
		json string
		want []string // parts of the Ignored message, in order; none: nil
	}{
		{`{"Network":"100.96.0.0/16","SubnetLen":26,"Backend":{"Type":"udp","Port":8285}}`, nil},
		{`{"network":"100.96.0.0/16","subnetlen":26,"backend":{"type":"vxlan","vni":2,"mtu":1400}}`, nil},
		{`{"Network":"100.96.0.0/16","EnableIPv6":false,"EnableNFTables":false,"Backend":{"Type":"vxlan","GBP":false}}`, nil},
		{`{"Network":"100.96.0.0/16","SubnetLne":26,"Backend":{"Type":"udp","Prot":8285}}`,
			[]string{`field "SubnetLne": unknown field; did you mean SubnetLen?`, `field "Backend.Prot": unknown field; did you mean Backend.Port?`}},
		{`{"Netwrok":"100.96.0.0/16","Network":"100.96.0.0/16"}`, []string{`"Netwrok": unknown field; did you mean Network?`}},
		{`{"Network":"100.96.0.0/16","Colour":"blue"}`, []string{`"Colour": unknown field; remove it`}},
		{`{"Network":"100.96.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48"}`,
			[]string{`"EnableIPv6": not supported by overlayd`, `"IPv6Network": not supported by overlayd`}},
		{`{"Network":"100.96.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}`,
			[]string{`"Backend.DirectRouting": not supported by overlayd`}},
	}
	for _, tt := range tests {
		c, err := ParseConfig([]byte(tt.json))
		if err != nil {
			t.Errorf("%s: %v", tt.json, err)
			continue
		}
		if len(tt.want) == 0 {
			if c.Ignored != nil {
				t.Errorf("%s: Ignored = %v, want nil", tt.json, c.Ignored)
			}
			continue
		}
		if c.Ignored == nil || !errors.Is(c.Ignored, ErrInvalidConfig) {
			t.Errorf("%s: Ignored = %v", tt.json, c.Ignored)
			continue
		}
		msg, at := c.Ignored.Error(), 0
		for _, w := range tt.want {
			i := strings.Index(msg[at:], w)
			if i < 0 {
				t.Errorf("%s: Ignored %q lacks %q (in order)", tt.json, msg, w)
				break
			}
			at += i + len(w)
		}
	}
}

func TestEditDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		d    int
	}{{"subnetlne", "subnetlen", 1}, {"prot", "port", 1}, {"", "abc", 3}, {"kitten", "sitting", 3}, {"same", "same", 0}} {
		if got := editDistance(tt.a, tt.b); got != tt.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.d)
		}
	}
}
