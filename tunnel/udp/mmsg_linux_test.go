package udp

import (
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestSockaddr(t *testing.T) {
	for _, s := range []string{"198.18.0.1:8285", "[::ffff:198.18.0.2]:8472", "0.0.0.0:0", "255.255.255.255:65535"} {
		ap := netip.MustParseAddrPort(s)
		var sa unix.RawSockaddrInet4
		putSockaddr(&sa, ap)
		want := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if got := addrPort(&sa); got != want || sa.Family != unix.AF_INET {
			t.Errorf("%s: round trip gives %v (family %d), want %v", s, got, sa.Family, want)
		}
	}
	var sa unix.RawSockaddrInet4
	putSockaddr(&sa, netip.MustParseAddrPort("1.2.3.4:8285"))
	b := (*[4]byte)(unsafe.Pointer(&sa.Port))
	if b[0] != 0x20 || b[1] != 0x5d {
		t.Errorf("port 8285 stored as % x, want 20 5d (network order)", b[:2])
	}
}

func TestControlMessages(t *testing.T) {
	b := make([]byte, ctrlSpace)
	n := putSegmentCmsg(b, 1400)
	msgs, err := unix.ParseSocketControlMessage(b[:n])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("parse UDP_SEGMENT: %v, %d messages", err, len(msgs))
	}
	m := msgs[0]
	if m.Header.Level != unix.IPPROTO_UDP || m.Header.Type != unix.UDP_SEGMENT ||
		len(m.Data) < 2 || *(*uint16)(unsafe.Pointer(&m.Data[0])) != 1400 {
		t.Errorf("UDP_SEGMENT message = %+v % x", m.Header, m.Data)
	}

	gro := func(level, typ int32, size uint32) []byte {
		b := make([]byte, unix.CmsgSpace(4))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = level, typ
		h.SetLen(unix.CmsgLen(4))
		*(*uint32)(unsafe.Pointer(&b[unix.CmsgLen(0)])) = size
		return b
	}
	other := gro(unix.SOL_IP, unix.IP_TOS, 7)
	for _, tc := range []struct {
		name string
		b    []byte
		want int
	}{
		{"none", nil, 0},
		{"gro", gro(unix.IPPROTO_UDP, unix.UDP_GRO, 1400), 1400},
		{"after another", append(other, gro(unix.IPPROTO_UDP, unix.UDP_GRO, 1300)...), 1300},
		{"other only", other, 0},
		{"truncated", gro(unix.IPPROTO_UDP, unix.UDP_GRO, 1400)[:unix.CmsgLen(0)], 0},
		{"bad length", func() []byte { b := gro(unix.IPPROTO_UDP, unix.UDP_GRO, 1400); b[0] = 200; return b }(), 0},
	} {
		if got := groSize(tc.b); got != tc.want {
			t.Errorf("%s: groSize = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// FuzzGROSize checks that parsing control messages never panics or loops.
func FuzzGROSize(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, 24))
	f.Fuzz(func(t *testing.T, b []byte) {
		groSize(b)
	})
}
