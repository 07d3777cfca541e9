// Package firewall keeps the host's iptables rules for the overlay, as
// flanneld's --ip-masq and --iptables-forward-rules do: forwarding to and
// from the network accepted (so a FORWARD DROP policy, Docker's, does not
// cut traffic between hosts), and with masquerading, traffic leaving the
// network masqueraded while traffic inside it keeps its addresses.
//
// Rules computes the rule set from the network, the lease and the options,
// without touching the system; IPTables applies it, in chains of its own,
// with either of the iptables back ends Debian ships (nft, legacy).
package firewall

import (
	"net/netip"
)

// The chains overlayd owns, and the comment on every rule it writes, so
// that iptables-save shows whose rules they are.
const (
	MasqChain      = "OVERLAYD-POSTRTG" // nat, jumped to first from POSTROUTING
	ForwardChain   = "OVERLAYD-FWD"     // filter, jumped to from FORWARD
	ForwardInChain = "OVERLAYD-FWD-IN"  // filter, jumped to from DOCKER-USER

	// DockerUserChain is where Docker runs the host's rules before its
	// own; it keeps the chain's rules when it starts or restarts.
	DockerUserChain = "DOCKER-USER"

	masqComment      = "overlayd masq"
	forwardComment   = "overlayd forward"
	forwardInComment = "overlayd forward in"
)

// multicast is never masqueraded (flanneld's rule).
var multicast = netip.MustParsePrefix("224.0.0.0/4")

// Options say which rules overlayd keeps.
type Options struct {
	// Masquerade: traffic from the network to anywhere outside it leaves
	// with the host's address (--ip-masq).
	Masquerade bool
	// Forward: forwarding to and from the network is accepted
	// (--iptables-forward-rules, on by default as in flanneld).
	Forward bool
	// RandomFully adds --random-fully to MASQUERADE, where iptables has
	// it: source ports are picked at random, which avoids the conntrack
	// races of many flows through one address.
	RandomFully bool
}

// Chain is one chain of overlayd's own, with its rules in order and the
// jump into it from a built-in chain.
type Chain struct {
	Table string
	Name  string
	// From is the built-in chain that jumps to Name. The nat jump goes
	// first (as flanneld inserts it), so overlayd's RETURNs are seen
	// before anyone's MASQUERADE; the filter jump is appended (as
	// flanneld does), after the host's own rules, but before a bare
	// RETURN (Docker before 28 ends DOCKER-USER so).
	From  string
	First bool
	// FromHost: From is not built in but kept by the host's firewall
	// manager (Docker's DOCKER-USER): created when missing, so that the
	// manager finds it in place and keeps it, and never removed.
	FromHost bool
	// Jump is the rule in From that enters the chain.
	Jump  []string
	Rules [][]string
}

// Owned is every chain overlayd may have created, with no rules: what
// Remove and a disabled option delete.
func Owned() []Chain {
	return []Chain{masqChain(), forwardChain(), forwardInChain()}
}

func masqChain() Chain {
	return Chain{Table: "nat", Name: MasqChain, From: "POSTROUTING", First: true,
		Jump: []string{"-m", "comment", "--comment", masqComment, "-j", MasqChain}}
}

func forwardChain() Chain {
	return Chain{Table: "filter", Name: ForwardChain, From: "FORWARD",
		Jump: []string{"-m", "comment", "--comment", forwardComment, "-j", ForwardChain}}
}

// forwardInChain is for Docker from version 28: its FORWARD jumps to
// DOCKER-USER and then to its own chains, which drop whatever enters
// docker0 from another interface, so FORWARD's appended jump is never
// reached by traffic from other hosts to the containers.
func forwardInChain() Chain {
	return Chain{Table: "filter", Name: ForwardInChain, From: DockerUserChain, FromHost: true,
		Jump: []string{"-m", "comment", "--comment", forwardInComment, "-j", ForwardInChain}}
}

// Rules is the rule set of a host whose lease is subnet in network, and
// whose traffic from other hosts arrives on the device ingress (the TUN or
// flannel.<VNI>; "" for any, as with host-gw):
// the chains the options ask for, each with its rules in order. The rules
// are written as `iptables -S` prints them, so that what is in place can
// be compared with them token by token.
func Rules(network, subnet netip.Prefix, ingress string, o Options) []Chain {
	network, subnet = network.Masked(), subnet.Masked()
	var chains []Chain
	if o.Masquerade {
		c := masqChain()
		n, s := network.String(), subnet.String()
		masq := []string{"-j", "MASQUERADE"}
		if o.RandomFully {
			masq = append(masq, "--random-fully")
		}
		c.Rules = [][]string{
			// Inside the network addresses are kept: the receiving
			// container sees the sender's own.
			rule([]string{"-s", s, "-d", n}, masqComment, "-j", "RETURN"),
			rule([]string{"-s", n, "-d", s}, masqComment, "-j", "RETURN"),
			// From outside to a local container (a published port):
			// the client keeps its address.
			rule([]string{"!", "-s", n, "-d", s}, masqComment, "-j", "RETURN"),
			// From the network to the rest of the world: the host's address.
			rule([]string{"-s", n, "!", "-d", multicast.String()}, masqComment, masq...),
			// From the host itself into the network: the overlay
			// address, so that replies come back through the overlay.
			rule([]string{"!", "-s", n, "-d", n}, masqComment, masq...),
		}
		chains = append(chains, c)
	}
	if o.Forward {
		c := forwardChain()
		n := network.String()
		c.Rules = [][]string{
			rule([]string{"-s", n}, forwardComment, "-j", "ACCEPT"),
			rule([]string{"-d", n}, forwardComment, "-j", "ACCEPT"),
		}
		// Ahead of Docker's rules, only what comes from another host's
		// containers to ours: traffic between local containers, from
		// Docker's other networks or from outside the network still
		// meets Docker's isolation (--icc=false, unpublished ports). The
		// device match keeps a sender on another interface that forges a
		// source inside the network out, as Docker would.
		fromPeers := []string{"-s", n, "-d", subnet.String()}
		if ingress != "" {
			fromPeers = append(fromPeers, "-i", ingress)
		}
		in := forwardInChain()
		in.Rules = [][]string{
			rule([]string{"-s", subnet.String()}, forwardInComment, "-j", "RETURN"),
			rule(fromPeers, forwardInComment, "-j", "ACCEPT"),
		}
		chains = append(chains, c, in)
	}
	return chains
}

// rule is match, then the comment, then the target: the order iptables -S
// prints them in, with both back ends.
func rule(match []string, comment string, target ...string) []string {
	r := append([]string{}, match...)
	r = append(r, "-m", "comment", "--comment", comment)
	return append(r, target...)
}
