package encap

import (
	"encoding/binary"
	"net/netip"

	"github.com/overlayd/overlayd/encap/encaptest"
)

var (
	testLocalMAC = [6]byte{0x92, 0x9d, 0xe4, 0x12, 0x31, 0xdf}
	testPeerMAC  = [6]byte{0xa6, 0xd7, 0x18, 0xcf, 0xe6, 0xcb}
	testParams   = Params{VNI: 1, SrcMAC: testPeerMAC, DstMAC: testLocalMAC}
)

// ipv4Opts shapes a test packet built by makeIPv4.
type ipv4Opts struct {
	src, dst string
	proto    uint8
	ttl      uint8
	df       bool
	fragOff  uint16 // in 8-byte units
	options  []byte // multiple of 4 bytes
	payload  []byte
}

// makeIPv4 builds a valid IPv4 packet; its checksum comes from the naive
// reference so that tests of Checksum do not grade themselves.
func makeIPv4(o ipv4Opts) []byte {
	if o.src == "" {
		o.src = "100.96.1.2"
	}
	if o.dst == "" {
		o.dst = "100.96.2.2"
	}
	if o.ttl == 0 {
		o.ttl = 64
	}
	if o.proto == 0 {
		o.proto = 17
	}
	ihl := 20 + len(o.options)
	pkt := make([]byte, ihl+len(o.payload))
	pkt[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	binary.BigEndian.PutUint16(pkt[4:], 0x1234)
	flags := o.fragOff
	if o.df {
		flags |= 0x4000
	}
	binary.BigEndian.PutUint16(pkt[6:], flags)
	pkt[8] = o.ttl
	pkt[9] = o.proto
	src, dst := netip.MustParseAddr(o.src).As4(), netip.MustParseAddr(o.dst).As4()
	copy(pkt[12:], src[:])
	copy(pkt[16:], dst[:])
	copy(pkt[20:], o.options)
	copy(pkt[ihl:], o.payload)
	encaptest.FixIPv4Checksum(pkt)
	return pkt
}

// withHeadroom returns a frame of headroom zero bytes followed by a copy of
// pkt.
func withHeadroom(headroom int, pkt []byte) []byte {
	return append(make([]byte, headroom), pkt...)
}

// isSubslice reports whether inner lies within outer's backing array, inside
// outer's bounds.
func isSubslice(outer, inner []byte) bool {
	if len(inner) == 0 || len(outer) == 0 {
		return len(inner) == 0
	}
	for i := range outer {
		if &outer[i] == &inner[0] {
			return i+len(inner) <= len(outer)
		}
	}
	return false
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
