package firewall

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

var (
	testNetwork = netip.MustParsePrefix("100.96.0.0/16")
	testSubnet  = netip.MustParsePrefix("100.96.3.0/24")
)

// testIngress is where the test host's traffic from other hosts arrives.
const testIngress = "flannel0"

// render is a chain's rules as iptables -S prints them.
func render(c Chain) []string {
	var out []string
	for _, r := range c.Rules {
		out = append(out, "-A "+c.Name+" "+joinQuoted(r))
	}
	return out
}

func joinQuoted(r []string) string {
	var b strings.Builder
	for i, t := range r {
		if i > 0 {
			b.WriteByte(' ')
		}
		if strings.Contains(t, " ") {
			t = `"` + t + `"`
		}
		b.WriteString(t)
	}
	return b.String()
}

func TestRulesMasqueradeAndForward(t *testing.T) {
	// The lease's host bits (FLANNEL_SUBNET's .1) must not matter.
	chains := Rules(testNetwork, netip.MustParsePrefix("100.96.3.1/24"), testIngress, Options{Masquerade: true, Forward: true, RandomFully: true})
	if len(chains) != 3 {
		t.Fatalf("%d chains, want nat and two filter", len(chains))
	}
	nat, filter, in := chains[0], chains[1], chains[2]
	if nat.Table != "nat" || nat.Name != "OVERLAYD-POSTRTG" || nat.From != "POSTROUTING" || !nat.First {
		t.Errorf("nat chain %+v", nat)
	}
	wantNAT := []string{
		`-A OVERLAYD-POSTRTG -s 100.96.3.0/24 -d 100.96.0.0/16 -m comment --comment "overlayd masq" -j RETURN`,
		`-A OVERLAYD-POSTRTG -s 100.96.0.0/16 -d 100.96.3.0/24 -m comment --comment "overlayd masq" -j RETURN`,
		`-A OVERLAYD-POSTRTG ! -s 100.96.0.0/16 -d 100.96.3.0/24 -m comment --comment "overlayd masq" -j RETURN`,
		`-A OVERLAYD-POSTRTG -s 100.96.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "overlayd masq" -j MASQUERADE --random-fully`,
		`-A OVERLAYD-POSTRTG ! -s 100.96.0.0/16 -d 100.96.0.0/16 -m comment --comment "overlayd masq" -j MASQUERADE --random-fully`,
	}
	if got := render(nat); !slices.Equal(got, wantNAT) {
		t.Errorf("nat rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantNAT, "\n"))
	}
	if filter.Table != "filter" || filter.Name != "OVERLAYD-FWD" || filter.From != "FORWARD" || filter.First {
		t.Errorf("filter chain %+v", filter)
	}
	wantFwd := []string{
		`-A OVERLAYD-FWD -s 100.96.0.0/16 -m comment --comment "overlayd forward" -j ACCEPT`,
		`-A OVERLAYD-FWD -d 100.96.0.0/16 -m comment --comment "overlayd forward" -j ACCEPT`,
	}
	if got := render(filter); !slices.Equal(got, wantFwd) {
		t.Errorf("filter rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantFwd, "\n"))
	}
	if in.Table != "filter" || in.Name != "OVERLAYD-FWD-IN" || in.From != "DOCKER-USER" || !in.FromHost || in.First {
		t.Errorf("filter chain %+v", in)
	}
	wantIn := []string{
		`-A OVERLAYD-FWD-IN -s 100.96.3.0/24 -m comment --comment "overlayd forward in" -j RETURN`,
		`-A OVERLAYD-FWD-IN -s 100.96.0.0/16 -d 100.96.3.0/24 -i flannel0 -m comment --comment "overlayd forward in" -j ACCEPT`,
	}
	if got := render(in); !slices.Equal(got, wantIn) {
		t.Errorf("DOCKER-USER's rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantIn, "\n"))
	}
}

func TestRulesOptions(t *testing.T) {
	if c := Rules(testNetwork, testSubnet, testIngress, Options{}); len(c) != 0 {
		t.Errorf("no options: %d chains", len(c))
	}
	fwd := Rules(testNetwork, testSubnet, testIngress, Options{Forward: true})
	if len(fwd) != 2 || fwd[0].Name != ForwardChain || fwd[1].Name != ForwardInChain {
		t.Errorf("forward only: %+v", fwd)
	}
	masq := Rules(testNetwork, testSubnet, testIngress, Options{Masquerade: true})
	if len(masq) != 1 || masq[0].Name != MasqChain {
		t.Fatalf("masquerade only: %+v", masq)
	}
	for _, r := range masq[0].Rules {
		if slices.Contains(r, "--random-fully") {
			t.Errorf("--random-fully without RandomFully: %q", r)
		}
	}
}

// TestRulesMasqueradeSemantics walks packets through the nat chain as the
// kernel would: first match wins, the end of the chain keeps the source.
func TestRulesMasqueradeSemantics(t *testing.T) {
	chain := Rules(testNetwork, testSubnet, testIngress, Options{Masquerade: true})[0]
	checkWalks(t, chain.Rules, "MASQUERADE", []walkCase{
		{"100.96.3.2", "100.96.1.2", "", false},   // local container to a remote one
		{"100.96.1.2", "100.96.3.2", "", false},   // remote container to a local one
		{"100.96.3.2", "100.96.3.3", "", false},   // on the bridge
		{"100.96.3.2", "198.18.0.254", "", true},  // container to the outside
		{"100.96.3.2", "224.0.0.251", "", false},  // multicast
		{"198.18.0.9", "100.96.3.2", "", false},   // outside to a local container
		{"198.18.0.3", "100.96.1.2", "", true},    // the host itself into the overlay
		{"198.18.0.3", "198.18.0.254", "", false}, // not overlay traffic at all
	})
}

// TestRulesForwardInSemantics walks packets through the chain DOCKER-USER
// jumps to: only another host's container to a local one, arriving on the
// overlay's device, is accepted ahead of Docker's own rules.
func TestRulesForwardInSemantics(t *testing.T) {
	chain := Rules(testNetwork, testSubnet, testIngress, Options{Forward: true})[1]
	checkWalks(t, chain.Rules, "ACCEPT", []walkCase{
		{"100.96.1.2", "100.96.3.2", "flannel0", true},    // remote container to a local one
		{"100.96.1.2", "100.96.3.2", "eth0", false},       // the same source forged on the LAN
		{"100.96.3.2", "100.96.3.3", "docker0", false},    // on the bridge (--icc=false is Docker's)
		{"100.96.3.2", "100.96.1.2", "docker0", false},    // local container out (Docker accepts it)
		{"172.18.0.2", "100.96.3.2", "br-1", false},       // another Docker network (its isolation)
		{"198.18.0.9", "100.96.3.2", "eth0", false},       // outside to a local container (published ports only)
		{"100.96.1.2", "100.96.4.2", "flannel0", false},   // between two other hosts: not ours
		{"100.96.1.2", "198.18.0.254", "flannel0", false}, // not into our containers
	})
	// Without a device (none known), any interface.
	any := Rules(testNetwork, testSubnet, "", Options{Forward: true})[1]
	checkWalks(t, any.Rules, "ACCEPT", []walkCase{{"100.96.1.2", "100.96.3.2", "eth0", true}})
}

// walkCase is a packet (its addresses and the interface it came in on)
// and whether the chain should send it to the target under test.
type walkCase struct {
	src, dst, in string
	hit          bool
}

func checkWalks(t *testing.T, rules [][]string, target string, cases []walkCase) {
	t.Helper()
	for _, tc := range cases {
		if got := walk(t, rules, tc) == target; got != tc.hit {
			t.Errorf("%s -> %s in %q: %s %v, want %v", tc.src, tc.dst, tc.in, target, got, tc.hit)
		}
	}
}

// walk evaluates rules made of [!] -s/-d/-i matches, a comment and a
// target, and returns the target of the first rule that matches the
// packet ("" for none).
func walk(t *testing.T, rules [][]string, p walkCase) string {
	t.Helper()
	src, dst := netip.MustParseAddr(p.src), netip.MustParseAddr(p.dst)
	for _, r := range rules {
		match, neg := true, false
		for i := 0; i < len(r); i++ {
			switch r[i] {
			case "!":
				neg = true
				continue
			case "-s", "-d":
				pfx := netip.MustParsePrefix(r[i+1])
				a := src
				if r[i] == "-d" {
					a = dst
				}
				if pfx.Contains(a) == neg {
					match = false
				}
				i++
			case "-i":
				if (r[i+1] == p.in) == neg {
					match = false
				}
				i++
			case "-j":
				if match {
					return r[i+1]
				}
			}
			neg = false
		}
	}
	return ""
}
