package tunnel

import (
	"encoding/json"
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
	p, ok := b.Peer(lease)
	if !ok {
		t.Fatal("flanneld udp lease rejected")
	}
	if want := netip.MustParseAddrPort("198.18.0.7:8285"); p.Underlay != want {
		t.Fatalf("underlay %s, want %s", p.Underlay, want)
	}
	if p.Subnet != lease.Subnet {
		t.Fatalf("subnet %s, want %s", p.Subnet, lease.Subnet)
	}

	lease.Attrs.BackendType = "udp"
	if _, ok := b.Peer(lease); !ok {
		t.Fatal("udp lease rejected")
	}
	lease.Attrs.BackendType = "vxlan"
	if _, ok := b.Peer(lease); ok {
		t.Fatal("vxlan lease accepted by the udp backend")
	}
}

func TestNewBackend(t *testing.T) {
	cfg, err := subnet.ParseConfig([]byte(`{"Network":"100.96.0.0/16","Backend":{"Type":"udp"}}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := newBackend(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if b.Port() != 8285 || b.Overhead() != 28 || b.Header().Len() != 0 {
		t.Fatalf("udp backend: port %d overhead %d header %d", b.Port(), b.Overhead(), b.Header().Len())
	}
	cfg.Backend.Type = "ipip"
	if _, err := newBackend(cfg); err == nil {
		t.Fatal("unknown backend accepted")
	}
}
