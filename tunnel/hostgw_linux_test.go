package tunnel

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/overlayd/overlayd/subnet"
)

func hostGWPeer(t *testing.T, sn, publicIP string) subnet.Peer {
	t.Helper()
	var attrs subnet.LeaseAttrs
	// As flanneld writes it (FLANNEL.md §3).
	value := fmt.Sprintf(`{"PublicIP":%q,"PublicIPv6":null,"BackendType":"host-gw"}`, publicIP)
	if err := json.Unmarshal([]byte(value), &attrs); err != nil {
		t.Fatal(err)
	}
	p, err := (&hostGW{}).Peer(subnet.Lease{Subnet: netip.MustParsePrefix(sn), Attrs: attrs})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHostGWPeer(t *testing.T) {
	h := &hostGW{}
	p := hostGWPeer(t, "100.96.2.0/24", "198.18.0.2")
	if p.Subnet != netip.MustParsePrefix("100.96.2.0/24") || p.Underlay.Addr() != netip.MustParseAddr("198.18.0.2") {
		t.Errorf("peer %s at %s", p.Subnet, p.Underlay)
	}
	for _, other := range []string{
		`{"PublicIP":"198.18.0.2","PublicIPv6":null}`,
		flanneldVXLANLease,
	} {
		if _, err := h.Peer(leaseFromJSON(t, "100.96.2.0/24", other)); !errors.Is(err, errOtherBackend) {
			t.Errorf("%s: %v, want errOtherBackend", other, err)
		}
	}
	if h.Overhead() != 0 || h.Port() != 0 || h.LeaseData(false) != nil || h.Type() != "host-gw" {
		t.Errorf("host-gw: overhead %d port %d data %s type %s", h.Overhead(), h.Port(), h.LeaseData(false), h.Type())
	}
}

// routesVia lists the routes of the main table through eth0 with a gateway.
func routesVia(t *testing.T, nl *netlink.Handle, u ExtIface) []string {
	t.Helper()
	link, err := nl.LinkByIndex(u.Index)
	if err != nil {
		t.Fatal(err)
	}
	routes, err := nl.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range routes {
		if r.Gw != nil {
			out = append(out, fmt.Sprintf("%s via %s", r.Dst, r.Gw))
		}
	}
	slices.Sort(out)
	return out
}

// host-gw routes each peer's subnet via its PublicIP, follows changes, and
// refuses a peer that the kernel reaches through a router, saying so.
func TestHostGWSync(t *testing.T) {
	nl := privateNetns(t)
	u := addExtIface(t, nl)
	h := newHostGW(u, nil)
	h.nl = nl
	if err := h.Setup(testLease, testNetwork, 1500); err != nil {
		t.Fatal(err)
	}
	// Routes that are not host-gw's stay untouched.
	for _, r := range []*netlink.Route{
		{LinkIndex: u.Index, Dst: prefixToIPNet(netip.MustParsePrefix("10.1.0.0/16")), Gw: net.ParseIP("198.18.0.254")},
		{LinkIndex: u.Index, Dst: prefixToIPNet(testNetwork), Gw: net.ParseIP("198.18.0.254")},
	} {
		if err := nl.RouteAdd(r); err != nil {
			t.Fatal(err)
		}
	}
	foreign := []string{"10.1.0.0/16 via 198.18.0.254", "100.96.0.0/16 via 198.18.0.254", "198.19.0.0/24 via 198.18.0.254"}
	check := func(want ...string) {
		t.Helper()
		want = append(want, foreign...)
		slices.Sort(want)
		if got := routesVia(t, nl, u); !slices.Equal(got, want) {
			t.Errorf("routes\n  %q\nwant\n  %q", got, want)
		}
	}

	p2 := hostGWPeer(t, "100.96.2.0/24", "198.18.0.2")
	p3 := hostGWPeer(t, "100.96.3.0/24", "198.18.0.3")
	routed := hostGWPeer(t, "100.96.4.0/24", "198.19.0.4") // behind 198.18.0.254
	unreachable := hostGWPeer(t, "100.96.5.0/24", "198.19.1.5")

	got, err := h.Sync([]subnet.Peer{p2, routed, p3, unreachable})
	if !errors.Is(err, errNotOnLink) {
		t.Fatalf("Sync: %v, want errNotOnLink", err)
	}
	for _, s := range []string{"198.19.0.4", "via router 198.18.0.254", "198.19.1.5", "vxlan"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
	t.Logf("Sync: %v", err)
	if len(got) != 2 || got[0].Subnet != p2.Subnet || got[1].Subnet != p3.Subnet {
		t.Errorf("programmed %v, want %s and %s", got, p2.Subnet, p3.Subnet)
	}
	check("100.96.2.0/24 via 198.18.0.2", "100.96.3.0/24 via 198.18.0.3")

	// Idempotent; a moved peer is routed to its new address; one that left
	// loses its route.
	if _, err := h.Sync([]subnet.Peer{p2, p3}); err != nil {
		t.Fatal(err)
	}
	p3 = hostGWPeer(t, "100.96.3.0/24", "198.18.0.33")
	if _, err := h.Sync([]subnet.Peer{p2, p3}); err != nil {
		t.Fatal(err)
	}
	check("100.96.2.0/24 via 198.18.0.2", "100.96.3.0/24 via 198.18.0.33")
	if _, err := h.Sync([]subnet.Peer{p3}); err != nil {
		t.Fatal(err)
	}
	check("100.96.3.0/24 via 198.18.0.33")

	if err := h.Teardown(); err != nil {
		t.Fatal(err)
	}
	check()
}
