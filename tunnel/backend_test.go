package tunnel

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/overlayd/overlayd/subnet"
)

// flanneld's udp backend writes leases without BackendType; they are peers.
func TestUDPBackendAcceptsFlanneldLeases(t *testing.T) {
	var attrs subnet.LeaseAttrs
	if err := json.Unmarshal([]byte(`{"PublicIP":"198.18.0.7","PublicIPv6":null}`), &attrs); err != nil {
		t.Fatal(err)
	}
	b := udpBackend{port: 8285}
	lease := subnet.Lease{Subnet: netip.MustParsePrefix("100.96.7.0/24"), Attrs: attrs}
	p, err := b.Peer(lease)
	if err != nil {
		t.Fatalf("flanneld udp lease rejected: %v", err)
	}
	if want := netip.MustParseAddrPort("198.18.0.7:8285"); p.Underlay != want {
		t.Fatalf("underlay %s, want %s", p.Underlay, want)
	}
	if p.Subnet != lease.Subnet {
		t.Fatalf("subnet %s, want %s", p.Subnet, lease.Subnet)
	}

	lease.Attrs.BackendType = "udp"
	if _, err := b.Peer(lease); err != nil {
		t.Fatalf("udp lease rejected: %v", err)
	}
	lease.Attrs.BackendType = "vxlan"
	if _, err := b.Peer(lease); !errors.Is(err, errOtherBackend) {
		t.Fatalf("vxlan lease given to the udp backend: %v, want errOtherBackend", err)
	}
}

func TestNewBackend(t *testing.T) {
	env := backendEnv{
		PublicIP: netip.MustParseAddr("198.18.0.1"),
		ExtIface: ExtIface{Name: "eth0", Index: 2, Addr: netip.MustParseAddr("198.18.0.1"), MTU: 1500},
	}
	cases := []struct {
		config    string
		dataplane string
		typ       string
		port      int
		overhead  int
		kernel    bool
	}{
		{`{"Network":"100.96.0.0/16","Backend":{"Type":"udp"}}`, "", "udp", 8285, 28, false},
		{`{"Network":"100.96.0.0/16","Backend":{"Type":"vxlan"}}`, "", "vxlan", 8472, 50, false},
		{`{"Network":"100.96.0.0/16","Backend":{"Type":"vxlan","Port":4789}}`, DataplaneUserspace, "vxlan", 4789, 50, false},
		{`{"Network":"100.96.0.0/16","Backend":{"Type":"vxlan","VNI":7}}`, DataplaneKernel, "vxlan", 8472, 50, true},
		{`{"Network":"100.96.0.0/16","Backend":{"Type":"host-gw"}}`, "", "host-gw", 0, 0, true},
	}
	for _, c := range cases {
		cfg, err := subnet.ParseConfig([]byte(c.config))
		if err != nil {
			t.Fatal(err)
		}
		env.Dataplane = c.dataplane
		b, err := newBackend(cfg, env)
		if err != nil {
			t.Fatalf("%s (%s): %v", c.config, c.dataplane, err)
		}
		_, kernel := b.(programmer)
		_, forwards := b.(forwarder)
		if b.Type() != c.typ || b.Port() != c.port || b.Overhead() != c.overhead || kernel != c.kernel || forwards == kernel {
			t.Errorf("%s (%s): type %s port %d overhead %d programmer %v forwarder %v", c.config, c.dataplane,
				b.Type(), b.Port(), b.Overhead(), kernel, forwards)
		}
		if f, ok := b.(forwarder); ok && f.Type() == "udp" && f.Header().Len() != 0 {
			t.Errorf("udp header of %d bytes", f.Header().Len())
		}
		if f, ok := b.(forwarder); ok && f.Type() == "vxlan" && f.Header().Len() != 22 {
			t.Errorf("vxlan header of %d bytes, want 8 + 14", f.Header().Len())
		}
	}

	cfg, err := subnet.ParseConfig([]byte(`{"Network":"100.96.0.0/16","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	env.Dataplane = "ebpf"
	if _, err := newBackend(cfg, env); err == nil {
		t.Error("unknown data plane accepted")
	}
	env.Dataplane = DataplaneKernel
	cfg.Backend.VNI = 12345678 // flannel.12345678 is too long a name
	if _, err := newBackend(cfg, env); err == nil {
		t.Error("a VNI whose device name does not fit accepted")
	}
	cfg.Backend.Type = "ipip"
	if _, err := newBackend(cfg, env); err == nil {
		t.Error("unknown backend accepted")
	}
}

// A peer takes partial checksums only when its lease says so; flanneld's
// leases never do, and our lease says so only when asked to, beside what
// flanneld writes.
func TestPeerPartialChecksums(t *testing.T) {
	udp := udpBackend{port: 8285}
	vb, err := newVXLANBackend(vxlanConfig(t, 1), netip.MustParseAddr("198.18.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		b     backend
		lease string
		want  bool
	}{
		{udp, `{"PublicIP":"198.18.0.7","PublicIPv6":null}`, false}, // flanneld
		{udp, `{"PublicIP":"198.18.0.7","PublicIPv6":null,"BackendType":"udp"}`, false},
		{udp, `{"PublicIP":"198.18.0.7","PublicIPv6":null,"BackendType":"udp","BackendData":{"PartialChecksums":true}}`, true},
		{udp, `{"PublicIP":"198.18.0.7","PublicIPv6":null,"BackendType":"udp","BackendData":{"PartialChecksums":false}}`, false},
		{udp, `{"PublicIP":"198.18.0.7","PublicIPv6":null,"BackendType":"udp","BackendData":"garbage"}`, false},
		{udp, `{"PublicIP":"198.18.0.7","PublicIPv6":null,"BackendType":"udp","BackendData":{"PartialChecksums":"yes"}}`, false},
		{vb, flanneldVXLANLease, false},
		{vb, `{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"a6:d7:18:cf:e6:cb","PartialChecksums":true}}`, true},
	} {
		p, err := tt.b.Peer(leaseFromJSON(t, "100.96.7.0/24", tt.lease))
		if err != nil {
			t.Errorf("%s: %v", tt.lease, err)
			continue
		}
		if p.PartialChecksums != tt.want {
			t.Errorf("%s: PartialChecksums %v, want %v", tt.lease, p.PartialChecksums, tt.want)
		}
	}

	// Our udp lease is flanneld's unless there is something to say.
	for _, tt := range []struct {
		partial bool
		want    string
	}{
		{false, `{"PublicIP":"198.18.0.7","PublicIPv6":null,"BackendType":"udp"}`},
		{true, `{"PublicIP":"198.18.0.7","PublicIPv6":null,"BackendType":"udp","BackendData":{"PartialChecksums":true}}`},
	} {
		attrs := subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.0.7"), BackendType: udp.Type(), BackendData: udp.LeaseData(tt.partial)}
		got, err := json.Marshal(attrs)
		if err != nil || string(got) != tt.want {
			t.Errorf("udp lease %s, %v; want %s", got, err, tt.want)
		}
		p, err := udp.Peer(leaseFromJSON(t, "100.96.7.0/24", string(got)))
		if err != nil || p.PartialChecksums != tt.partial {
			t.Errorf("our own udp lease %s read back as %v, %v", got, p.PartialChecksums, err)
		}
	}
}

// A lease outside the network, or overlapping this host's own, is never
// a peer: a kernel backend would route it (0.0.0.0-0 is the default
// route), and its host could send from our own addresses.
func TestLeasesOutsideTheNetworkAreNoPeers(t *testing.T) {
	cfg, err := subnet.ParseConfig([]byte(pairNetworkConfig))
	if err != nil {
		t.Fatal(err)
	}
	e := &Engine{
		network:    cfg,
		lease:      subnet.Lease{Subnet: netip.MustParsePrefix("100.96.1.0/24")},
		backend:    udpBackend{port: 8285},
		log:        slog.New(slog.DiscardHandler),
		firstPeers: make(chan struct{}),
	}
	e.peers.Store(subnet.NewTable(nil))
	attrs := subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.0.7")}
	var leases []subnet.Lease
	for _, sn := range []string{"100.96.7.0/24", "0.0.0.0/0", "198.19.5.0/24", "100.96.0.0/16", "100.96.0.0/20", "100.96.1.128/25"} {
		leases = append(leases, subnet.Lease{Subnet: netip.MustParsePrefix(sn), Attrs: attrs})
	}
	e.setPeers(leases)
	var got []string
	for _, p := range e.peers.Load().Peers() {
		got = append(got, p.Subnet.String())
	}
	if want := []string{"100.96.7.0/24"}; !slices.Equal(got, want) {
		t.Errorf("peers %v, want %v", got, want)
	}
	for sn, why := range map[string]string{
		"0.0.0.0/0":       "outside the network",
		"198.19.5.0/24":   "outside the network",
		"100.96.0.0/16":   "overlaps",
		"100.96.0.0/20":   "overlaps",
		"100.96.1.128/25": "overlaps",
	} {
		if reason := e.rejected[netip.MustParsePrefix(sn)]; !strings.Contains(reason, why) {
			t.Errorf("lease %s rejected for %q, want a reason with %q", sn, reason, why)
		}
	}
}
