package tunnel

import (
	"encoding/json"
	"errors"
	"net/netip"
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
		Underlay: Underlay{Name: "eth0", Index: 2, Addr: netip.MustParseAddr("198.18.0.1"), MTU: 1500},
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
