package encap

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/overlayd/overlayd/encap/encaptest"
)

func TestParseIPv4(t *testing.T) {
	t.Parallel()
	for _, o := range []ipv4Opts{
		{payload: []byte("hello")},
		{},
		{options: []byte{1, 1, 1, 0}, payload: []byte("with options")},
		{options: make([]byte, 40)}, // IHL 15, no payload
		{src: "198.18.0.1", dst: "198.18.255.254", proto: 6, payload: make([]byte, 1480)},
	} {
		pkt := makeIPv4(o)
		src, dst, err := ParseIPv4(pkt)
		if err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		if want := netip.MustParseAddr(orDefault(o.src, "100.96.1.2")); src != want {
			t.Errorf("src = %v, want %v", src, want)
		}
		if want := netip.MustParseAddr(orDefault(o.dst, "100.96.2.2")); dst != want {
			t.Errorf("dst = %v, want %v", dst, want)
		}
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func TestParseIPv4Malformed(t *testing.T) {
	t.Parallel()
	valid := func() []byte { return makeIPv4(ipv4Opts{payload: []byte("0123456789")}) }
	for _, tc := range []struct {
		name string
		pkt  func() []byte
		want error
	}{
		{"empty", func() []byte { return nil }, ErrTruncated},
		{"short header", func() []byte { return valid()[:19] }, ErrTruncated},
		{"cut payload", func() []byte { return valid()[:25] }, ErrTruncated},
		{"IPv6", func() []byte { p := valid(); p[0] = 0x60; return p }, ErrNotIPv4},
		{"version 0", func() []byte { return make([]byte, 20) }, ErrNotIPv4},
		{"IHL 4", func() []byte { p := valid(); p[0] = 0x44; return p }, ErrBadHeaderLen},
		{"IHL 0", func() []byte { p := valid(); p[0] = 0x40; return p }, ErrBadHeaderLen},
		{"IHL past end", func() []byte { p := valid(); p[0] = 0x4f; return p }, ErrBadHeaderLen},
		{"total length below header", func() []byte {
			p := valid()[:20]
			p[3] = 20
			p[0] = 0x46 // 24-byte header in a 20-byte packet
			return p
		}, ErrBadHeaderLen},
		{"total length too long", func() []byte { p := valid(); p[3]++; encaptest.FixIPv4Checksum(p); return p }, ErrTruncated},
		{"total length too short", func() []byte { p := valid(); p[3]--; encaptest.FixIPv4Checksum(p); return p }, ErrBadTotalLen},
		{"trailing bytes", func() []byte { return append(valid(), 0) }, ErrBadTotalLen},
		{"Ethernet padding", func() []byte { return append(valid(), make([]byte, 16)...) }, ErrBadTotalLen},
		{"checksum", func() []byte { p := valid(); p[11] ^= 1; return p }, ErrBadChecksum},
		{"header byte flipped", func() []byte { p := valid(); p[8]--; return p }, ErrBadChecksum},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseIPv4(tc.pkt())
			if !errors.Is(err, tc.want) {
				t.Errorf("ParseIPv4 = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestErrorsDistinct(t *testing.T) {
	t.Parallel()
	all := []error{ErrTruncated, ErrNotIPv4, ErrBadHeaderLen, ErrBadTotalLen, ErrBadChecksum,
		ErrBadVXLANFlags, ErrWrongVNI, ErrWrongMAC, ErrNotIPv4Ether, ErrNoHeadroom, ErrVNIOutOfRange}
	for i, a := range all {
		for j, b := range all {
			if i != j && (errors.Is(a, b) || a.Error() == b.Error()) {
				t.Errorf("%v and %v are not distinct", a, b)
			}
		}
	}
}

func TestIPv4Dst(t *testing.T) {
	t.Parallel()
	pkt := makeIPv4(ipv4Opts{dst: "100.96.7.9"})
	if dst, ok := IPv4Dst(pkt); !ok || dst != netip.MustParseAddr("100.96.7.9") {
		t.Errorf("IPv4Dst = %v, %v", dst, ok)
	}
	pkt[0] = 0x60
	if _, ok := IPv4Dst(pkt); ok {
		t.Error("IPv4Dst accepted IPv6")
	}
	if _, ok := IPv4Dst(pkt[:19]); ok {
		t.Error("IPv4Dst accepted 19 bytes")
	}
}

func TestIPv4DF(t *testing.T) {
	t.Parallel()
	if !IPv4DF(makeIPv4(ipv4Opts{df: true})) {
		t.Error("DF not seen")
	}
	if IPv4DF(makeIPv4(ipv4Opts{})) {
		t.Error("DF seen on a packet without it")
	}
	if IPv4DF(makeIPv4(ipv4Opts{fragOff: 0x1fff})) {
		t.Error("fragment offset mistaken for DF")
	}
	if IPv4DF([]byte{0x45, 0, 0, 20, 0, 0, 0x40}) {
		t.Error("DF read from a truncated header")
	}
}

func TestDecTTL(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(5, 6))
	for ttl := 0; ttl < 256; ttl++ {
		for range 50 {
			opts := ipv4Opts{ttl: uint8(ttl), proto: uint8(rng.Uint32()), df: rng.IntN(2) == 0, payload: []byte{1, 2, 3}}
			pkt := makeIPv4(opts)
			pkt[8] = uint8(ttl) // makeIPv4 maps 0 to 64
			pkt[1] = byte(rng.Uint32())
			pkt[4], pkt[5] = byte(rng.Uint32()), byte(rng.Uint32())
			encaptest.FixIPv4Checksum(pkt)
			before := string(pkt)

			ok := DecTTL(pkt)
			if ttl <= 1 {
				if ok || string(pkt) != before {
					t.Fatalf("TTL %d: DecTTL = %v and changed the packet", ttl, ok)
				}
				continue
			}
			if !ok || int(pkt[8]) != ttl-1 {
				t.Fatalf("TTL %d: DecTTL = %v, TTL now %d", ttl, ok, pkt[8])
			}
			if err := validateIPv4(pkt); err != nil {
				t.Fatalf("TTL %d, header %x: after DecTTL: %v", ttl, pkt[:20], err)
			}
		}
	}
}

func TestParseIPv4Allocs(t *testing.T) {
	pkt := makeIPv4(ipv4Opts{payload: make([]byte, 1000)})
	if n := testing.AllocsPerRun(1000, func() {
		if _, _, err := ParseIPv4(pkt); err != nil {
			t.Fatal(err)
		}
		IPv4Dst(pkt)
		IPv4DF(pkt)
	}); n != 0 {
		t.Errorf("ParseIPv4 allocates %v times", n)
	}
	bad := pkt[:10]
	if n := testing.AllocsPerRun(1000, func() { ParseIPv4(bad) }); n != 0 {
		t.Errorf("ParseIPv4 of a malformed packet allocates %v times", n)
	}
	if n := testing.AllocsPerRun(1000, func() {
		pkt[8] = 64
		encaptest.FixIPv4Checksum(pkt)
		DecTTL(pkt)
	}); n != 0 {
		t.Errorf("DecTTL allocates %v times", n)
	}
}

func BenchmarkParseIPv4(b *testing.B) {
	pkt := makeIPv4(ipv4Opts{payload: make([]byte, 1452)})
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		if _, _, err := ParseIPv4(pkt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecTTL(b *testing.B) {
	pkt := makeIPv4(ipv4Opts{payload: make([]byte, 1452)})
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		pkt[8] = 64 // keep it decrementable; the checksum drifts, which DecTTL does not read
		DecTTL(pkt)
	}
}
