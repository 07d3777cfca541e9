package subnet

import (
	"cmp"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/overlayd/overlayd/encap"
)

// Peer is a remote host as the data path sees it.
type Peer struct {
	Subnet   netip.Prefix   // its overlay subnet
	Underlay netip.AddrPort // where its encapsulated packets go, and come from
	Encap    encap.Params   // per-peer header values, precomputed
	Lease    Lease          // the lease it was built from
	// PartialChecksums: its lease says it takes TCP and UDP checksums left
	// partial (offload.SplitOptions), because it never looks at them. Only
	// an overlayd whose TUN has offloads says so; flanneld and kernel
	// VTEPs verify every checksum.
	PartialChecksums bool
	// Counters count what the data path forwarded to and from the peer.
	// NewTable gives a peer without counters new ones; the control plane
	// hands a staying peer's counters on to the next table, so they only
	// grow while the peer stays and go with it.
	Counters *PeerCounters
}

// PeerCounters count one peer's traffic, by direction.
type PeerCounters struct {
	Tx, Rx PeerDirCounters
}

// PeerDirCounters count one direction of a peer's traffic: inner packets
// and bytes forwarded, and packets dropped. Each direction has a cache line
// of its own, since a worker's two routines write one each.
type PeerDirCounters struct {
	Packets, Bytes, Drops atomic.Uint64
	_                     [64 - 3*8]byte
}

// Table is the data path's peer table. It is immutable once built, so any
// number of goroutines may read it without locks; the control plane builds
// a new Table for every change and swaps it in whole (atomic.Pointer).
// Lookups allocate nothing.
type Table struct {
	peers      []Peer
	byLen      []lenIndex // one per distinct subnet length, longest first
	byUnderlay map[netip.Addr]int32
}

// lenIndex finds the peers whose subnets have one prefix length.
type lenIndex struct {
	mask    uint32
	subnets map[uint32]int32 // IPv4 network address -> index into peers
}

// NewTable builds a table over peers, which it copies. Lookups cover IPv4
// subnets only (leases are IPv4); when two peers share a subnet or an
// underlay address, the first one wins.
func NewTable(peers []Peer) *Table {
	t := &Table{
		peers:      slices.Clone(peers),
		byUnderlay: make(map[netip.Addr]int32, len(peers)),
	}
	for i, p := range t.peers {
		if p.Counters == nil {
			t.peers[i].Counters = new(PeerCounters)
		}
		if u := p.Underlay.Addr().Unmap(); u.IsValid() {
			if _, dup := t.byUnderlay[u]; !dup {
				t.byUnderlay[u] = int32(i)
			}
		}
		if !p.Subnet.IsValid() || !p.Subnet.Addr().Is4() {
			continue
		}
		ix := t.index(p.Subnet.Bits())
		key := addrU32(p.Subnet.Addr()) & ix.mask
		if _, dup := ix.subnets[key]; !dup {
			ix.subnets[key] = int32(i)
		}
	}
	slices.SortFunc(t.byLen, func(a, b lenIndex) int { return cmp.Compare(b.mask, a.mask) })
	return t
}

func (t *Table) index(bits int) *lenIndex {
	mask := prefixMask(bits)
	for i := range t.byLen {
		if t.byLen[i].mask == mask {
			return &t.byLen[i]
		}
	}
	t.byLen = append(t.byLen, lenIndex{mask: mask, subnets: make(map[uint32]int32)})
	return &t.byLen[len(t.byLen)-1]
}

// Lookup returns the peer whose subnet holds dst, the longest match when
// subnets nest. A nil Table holds no peers.
func (t *Table) Lookup(dst netip.Addr) (*Peer, bool) {
	if t == nil {
		return nil, false
	}
	dst = dst.Unmap()
	if !dst.Is4() {
		return nil, false
	}
	a := addrU32(dst)
	for i := range t.byLen {
		ix := &t.byLen[i]
		if j, ok := ix.subnets[a&ix.mask]; ok {
			return &t.peers[j], true
		}
	}
	return nil, false
}

// ByUnderlay returns the peer whose underlay address is src: the receive
// path's check that a packet comes from a registered host.
func (t *Table) ByUnderlay(src netip.Addr) (*Peer, bool) {
	if t == nil {
		return nil, false
	}
	j, ok := t.byUnderlay[src.Unmap()]
	if !ok {
		return nil, false
	}
	return &t.peers[j], true
}

// Len returns the number of peers.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.peers)
}

// Peers returns a copy of the peers, in the order NewTable got them.
func (t *Table) Peers() []Peer {
	if t == nil {
		return nil
	}
	return slices.Clone(t.peers)
}
