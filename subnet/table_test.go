package subnet

import (
	"fmt"
	"net/netip"
	"testing"
)

func peer(sn, underlay string) Peer {
	return Peer{Subnet: pfx(sn), Underlay: netip.AddrPortFrom(addr(underlay), 8285)}
}

func TestTableLookup(t *testing.T) {
	tab := NewTable([]Peer{
		peer("100.96.1.0/24", "198.18.0.1"),
		peer("100.96.2.0/24", "198.18.0.2"),
		peer("100.96.2.128/25", "198.18.0.3"), // nested: longer wins
		peer("100.96.0.0/16", "198.18.0.4"),   // catch-all
		peer("100.96.1.0/24", "198.18.0.9"),   // duplicate subnet: first wins
	})
	tests := []struct {
		dst  string
		want string // underlay, "" for a miss
	}{
		{"100.96.1.7", "198.18.0.1"},
		{"100.96.2.7", "198.18.0.2"},
		{"100.96.2.200", "198.18.0.3"},
		{"100.96.77.1", "198.18.0.4"},
		{"::ffff:100.96.1.7", "198.18.0.1"},
		{"100.97.0.1", ""},
		{"fd00::1", ""},
	}
	for _, tt := range tests {
		p, ok := tab.Lookup(addr(tt.dst))
		switch {
		case tt.want == "" && ok:
			t.Errorf("Lookup(%s) = %v, want a miss", tt.dst, p.Subnet)
		case tt.want != "" && (!ok || p.Underlay.Addr() != addr(tt.want)):
			t.Errorf("Lookup(%s) = %v, %v; want underlay %s", tt.dst, p, ok, tt.want)
		}
	}
	if tab.Len() != 5 || len(tab.Peers()) != 5 {
		t.Errorf("Len = %d, Peers = %d, want 5", tab.Len(), len(tab.Peers()))
	}
}

func TestTableByUnderlay(t *testing.T) {
	tab := NewTable([]Peer{peer("100.96.1.0/24", "198.18.0.1"), peer("100.96.2.0/24", "198.18.0.2")})
	if p, ok := tab.ByUnderlay(addr("198.18.0.2")); !ok || p.Subnet != pfx("100.96.2.0/24") {
		t.Errorf("ByUnderlay(198.18.0.2) = %v, %v", p, ok)
	}
	if p, ok := tab.ByUnderlay(addr("::ffff:198.18.0.1")); !ok || p.Subnet != pfx("100.96.1.0/24") {
		t.Errorf("ByUnderlay(v4-mapped 198.18.0.1) = %v, %v", p, ok)
	}
	if _, ok := tab.ByUnderlay(addr("198.18.0.3")); ok {
		t.Error("ByUnderlay(198.18.0.3) found a peer")
	}
}

func TestTableImmutable(t *testing.T) {
	peers := []Peer{peer("100.96.1.0/24", "198.18.0.1")}
	tab := NewTable(peers)
	peers[0].Underlay = netip.MustParseAddrPort("198.18.0.99:1")
	got := tab.Peers()
	got[0].Underlay = netip.MustParseAddrPort("198.18.0.98:1")
	if p, _ := tab.Lookup(addr("100.96.1.1")); p.Underlay.Addr() != addr("198.18.0.1") {
		t.Errorf("table changed through its input or Peers(): %v", p.Underlay)
	}
}

func TestTableNilAndEmpty(t *testing.T) {
	for _, tab := range []*Table{nil, NewTable(nil)} {
		if _, ok := tab.Lookup(addr("100.96.1.1")); ok {
			t.Error("Lookup in an empty table found a peer")
		}
		if _, ok := tab.ByUnderlay(addr("198.18.0.1")); ok {
			t.Error("ByUnderlay in an empty table found a peer")
		}
		if tab.Len() != 0 || len(tab.Peers()) != 0 {
			t.Error("empty table has peers")
		}
	}
}

func bigTable(n int) *Table {
	peers := make([]Peer, n)
	for i := range peers {
		peers[i] = peer(fmt.Sprintf("100.96.%d.0/24", i%256), fmt.Sprintf("198.18.%d.%d", i/250, 1+i%250))
	}
	return NewTable(peers)
}

func TestTableLookupAllocs(t *testing.T) {
	tab := bigTable(200)
	dst, src := addr("100.96.77.9"), addr("198.18.0.78")
	allocs := testing.AllocsPerRun(1000, func() {
		if _, ok := tab.Lookup(dst); !ok {
			t.Fatal("miss")
		}
		if _, ok := tab.ByUnderlay(src); !ok {
			t.Fatal("miss")
		}
		tab.Lookup(addr("100.97.0.1"))
	})
	if allocs != 0 {
		t.Errorf("Lookup + ByUnderlay allocate %v times per call, want 0", allocs)
	}
}

func BenchmarkTableLookup(b *testing.B) {
	tab := bigTable(250)
	dsts := make([]netip.Addr, 256)
	for i := range dsts {
		dsts[i] = netip.AddrFrom4([4]byte{100, 96, byte(i), 7})
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, ok := tab.Lookup(dsts[i&255]); !ok && i&255 < 250 {
			b.Fatal("miss")
		}
	}
}

func BenchmarkTableByUnderlay(b *testing.B) {
	tab := bigTable(250)
	src := addr("198.18.0.100")
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := tab.ByUnderlay(src); !ok {
			b.Fatal("miss")
		}
	}
}
