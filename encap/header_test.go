package encap

import (
	"bytes"
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	inners := [][]byte{
		makeIPv4(ipv4Opts{}),
		makeIPv4(ipv4Opts{proto: 1, payload: []byte("ping")}),
		makeIPv4(ipv4Opts{options: []byte{7, 7, 4, 0}, payload: make([]byte, 1400)}),
		makeIPv4(ipv4Opts{payload: make([]byte, 65535-20)}),
	}
	for _, h := range []Header{FlannelUDP, NewVXLAN(1, testLocalMAC), NewVXLAN(MaxVNI, testLocalMAC)} {
		p := testParams
		if v, ok := h.(*vxlan); ok {
			p.VNI = v.vni
		}
		for _, inner := range inners {
			frame := withHeadroom(h.Len(), inner)
			if err := h.Encap(frame, &p); err != nil {
				t.Fatalf("%v: Encap: %v", h, err)
			}
			got, err := h.Decap(frame)
			if err != nil {
				t.Fatalf("%v: Decap: %v", h, err)
			}
			if !bytes.Equal(got, inner) {
				t.Fatalf("%v: Decap returned %d bytes, not the %d encapsulated", h, len(got), len(inner))
			}
			if &got[0] != &frame[h.Len()] {
				t.Fatalf("%v: inner does not begin at frame[Len()]", h)
			}
		}
	}
}

func TestVXLANEncapBytes(t *testing.T) {
	t.Parallel()
	h := NewVXLAN(0x123456, testLocalMAC)
	frame := make([]byte, h.Len())
	p := Params{VNI: 0xabcdef, SrcMAC: [6]byte{1, 2, 3, 4, 5, 6}, DstMAC: [6]byte{7, 8, 9, 10, 11, 12}}
	if err := h.Encap(frame, &p); err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0, // flags, VNI from Params
		7, 8, 9, 10, 11, 12, // dst MAC
		1, 2, 3, 4, 5, 6, // src MAC
		0x08, 0x00,
	}
	if !bytes.Equal(frame, want) {
		t.Errorf("Encap wrote\n%x\nwant\n%x", frame, want)
	}
}

func TestEncapErrors(t *testing.T) {
	t.Parallel()
	h := NewVXLAN(1, testLocalMAC)
	if err := h.Encap(make([]byte, h.Len()-1), &testParams); !errors.Is(err, ErrNoHeadroom) {
		t.Errorf("short frame: %v, want %v", err, ErrNoHeadroom)
	}
	p := testParams
	p.VNI = MaxVNI + 1
	if err := h.Encap(make([]byte, 64), &p); !errors.Is(err, ErrVNIOutOfRange) {
		t.Errorf("VNI 2^24: %v, want %v", err, ErrVNIOutOfRange)
	}
	if err := FlannelUDP.Encap(nil, nil); err != nil {
		t.Errorf("FlannelUDP.Encap: %v", err)
	}
}

func TestNewVXLANPanicsOnBadVNI(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Error("NewVXLAN(2^24) did not panic")
		}
	}()
	NewVXLAN(MaxVNI+1, testLocalMAC)
}

func TestVXLANDecapMalformed(t *testing.T) {
	t.Parallel()
	h := NewVXLAN(1, testLocalMAC)
	valid := func() []byte {
		frame := withHeadroom(h.Len(), makeIPv4(ipv4Opts{payload: []byte("payload")}))
		if err := h.Encap(frame, &testParams); err != nil {
			t.Fatal(err)
		}
		return frame
	}
	for _, tc := range []struct {
		name  string
		frame func() []byte
		want  error
	}{
		{"empty", func() []byte { return nil }, ErrTruncated},
		{"VXLAN header only", func() []byte { return valid()[:8] }, ErrTruncated},
		{"no inner packet", func() []byte { return valid()[:22] }, ErrTruncated},
		{"inner cut short", func() []byte { return valid()[:45] }, ErrTruncated},
		{"I flag clear", func() []byte { f := valid(); f[0] = 0; return f }, ErrBadVXLANFlags},
		{"GBP flag", func() []byte { f := valid(); f[0] = 0x88; return f }, ErrBadVXLANFlags},
		{"reserved flag bits", func() []byte { f := valid(); f[2] = 1; return f }, ErrBadVXLANFlags},
		{"reserved last byte", func() []byte { f := valid(); f[7] = 1; return f }, ErrBadVXLANFlags},
		{"VNI 2", func() []byte { f := valid(); f[6] = 2; return f }, ErrWrongVNI},
		{"VNI high byte", func() []byte { f := valid(); f[4] = 1; return f }, ErrWrongVNI},
		{"other MAC", func() []byte { f := valid(); f[13] ^= 1; return f }, ErrWrongMAC},
		{"broadcast MAC", func() []byte { f := valid(); copy(f[8:14], bytes.Repeat([]byte{0xff}, 6)); return f }, ErrWrongMAC},
		{"ARP", func() []byte { f := valid(); f[21] = 0x06; return f }, ErrNotIPv4Ether},
		{"IPv6 ethertype", func() []byte { f := valid(); f[20], f[21] = 0x86, 0xdd; return f }, ErrNotIPv4Ether},
		{"VLAN tag", func() []byte { f := valid(); f[20], f[21] = 0x81, 0x00; return f }, ErrNotIPv4Ether},
		{"inner IPv6", func() []byte { f := valid(); f[22] = 0x60; return f }, ErrNotIPv4},
		{"inner IHL", func() []byte { f := valid(); f[22] = 0x43; return f }, ErrBadHeaderLen},
		{"inner trailing bytes", func() []byte { return append(valid(), 0, 0) }, ErrBadTotalLen},
		{"inner checksum", func() []byte { f := valid(); f[22+10] ^= 0x80; return f }, ErrBadChecksum},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner, err := h.Decap(tc.frame())
			if !errors.Is(err, tc.want) {
				t.Errorf("Decap = %v, want %v", err, tc.want)
			}
			if inner != nil {
				t.Errorf("Decap returned %d bytes with an error", len(inner))
			}
		})
	}
}

func TestFlannelUDPDecapMalformed(t *testing.T) {
	t.Parallel()
	valid := makeIPv4(ipv4Opts{payload: []byte("payload")})
	for _, tc := range []struct {
		frame []byte
		want  error
	}{
		{nil, ErrTruncated},
		{valid[:20], ErrTruncated},
		{append([]byte{0x60}, valid[1:]...), ErrNotIPv4},
		{append(append([]byte(nil), valid...), 0), ErrBadTotalLen},
	} {
		if inner, err := FlannelUDP.Decap(tc.frame); !errors.Is(err, tc.want) || inner != nil {
			t.Errorf("Decap(%x) = %d bytes, %v; want %v", tc.frame, len(inner), err, tc.want)
		}
	}
}

func TestVXLANDecapTrimsEthernetPadding(t *testing.T) {
	t.Parallel()
	h := NewVXLAN(1, testLocalMAC)
	inner := makeIPv4(ipv4Opts{proto: 1, payload: []byte("short")}) // 25 bytes
	frame := withHeadroom(h.Len(), inner)
	frame = append(frame, make([]byte, minEtherPayload-len(inner))...) // padded to 60-byte frame
	if err := h.Encap(frame, &testParams); err != nil {
		t.Fatal(err)
	}
	got, err := h.Decap(frame)
	if err != nil || !bytes.Equal(got, inner) {
		t.Fatalf("Decap of a padded frame = %x, %v; want %x", got, err, inner)
	}
	// Padding is only ever added up to the minimum frame size; anything
	// longer with trailing bytes is malformed.
	frame = append(frame, 0)
	if _, err := h.Decap(frame); !errors.Is(err, ErrBadTotalLen) {
		t.Errorf("Decap of an over-padded frame = %v, want %v", err, ErrBadTotalLen)
	}
}

func TestHeaderLen(t *testing.T) {
	t.Parallel()
	if n := FlannelUDP.Len(); n != 0 {
		t.Errorf("FlannelUDP.Len() = %d", n)
	}
	if n := NewVXLAN(1, testLocalMAC).Len(); n != 22 {
		t.Errorf("VXLAN Len() = %d", n)
	}
}

func TestHeaderAllocs(t *testing.T) {
	inner := makeIPv4(ipv4Opts{payload: make([]byte, 1400)})
	for _, h := range []Header{FlannelUDP, NewVXLAN(1, testLocalMAC)} {
		frame := withHeadroom(h.Len(), inner)
		if n := testing.AllocsPerRun(1000, func() {
			if err := h.Encap(frame, &testParams); err != nil {
				t.Fatal(err)
			}
			if _, err := h.Decap(frame); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%v: Encap+Decap allocate %v times", h, n)
		}
		bad := frame[:len(frame)-1]
		if n := testing.AllocsPerRun(1000, func() { h.Decap(bad) }); n != 0 {
			t.Errorf("%v: failing Decap allocates %v times", h, n)
		}
	}
}

var benchHeaders = map[string]Header{"udp": FlannelUDP, "vxlan": NewVXLAN(1, testLocalMAC)}

func BenchmarkEncap(b *testing.B) {
	for name, h := range benchHeaders {
		frame := withHeadroom(h.Len(), makeIPv4(ipv4Opts{payload: make([]byte, 1400)}))
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				if err := h.Encap(frame, &testParams); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecap(b *testing.B) {
	for name, h := range benchHeaders {
		frame := withHeadroom(h.Len(), makeIPv4(ipv4Opts{payload: make([]byte, 1400)}))
		if err := h.Encap(frame, &testParams); err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				if _, err := h.Decap(frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
