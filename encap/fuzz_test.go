package encap

import (
	"bytes"
	"encoding/binary"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlayd/overlayd/encap/encaptest"
)

// The fuzz targets check invariants, not exact outputs: no panic, results
// inside the input, and every success agreeing with ParseIPv4. Seed corpora
// live in testdata/fuzz/<FuzzName>/.

func FuzzParseIPv4(f *testing.F) {
	f.Add(makeIPv4(ipv4Opts{payload: []byte("seed")}))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		src, dst, err := ParseIPv4(pkt)
		if err != nil {
			if src.IsValid() || dst.IsValid() {
				t.Fatalf("addresses returned with error %v", err)
			}
			return
		}
		ihl := int(pkt[0]&0x0f) * 4
		if len(pkt) < 20 || pkt[0]>>4 != 4 || ihl < 20 || ihl > len(pkt) ||
			int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) || encaptest.NaiveChecksum(pkt[:ihl], 0) != 0xffff {
			t.Fatalf("accepted a malformed packet %x", pkt)
		}
		if !bytes.Equal(src.AsSlice(), pkt[12:16]) || !bytes.Equal(dst.AsSlice(), pkt[16:20]) {
			t.Fatalf("addresses %v > %v from %x", src, dst, pkt[:20])
		}
	})
}

func FuzzDecapUDP(f *testing.F) {
	f.Add(makeIPv4(ipv4Opts{payload: []byte("seed")}))
	f.Fuzz(func(t *testing.T, frame []byte) {
		inner, err := FlannelUDP.Decap(frame)
		checkDecap(t, frame, inner, err, 0)
	})
}

func FuzzDecapVXLAN(f *testing.F) {
	seed := withHeadroom(22, makeIPv4(ipv4Opts{payload: []byte("seed")}))
	if err := NewVXLAN(1, testLocalMAC).Encap(seed, &testParams); err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	h := NewVXLAN(1, testLocalMAC)
	f.Fuzz(func(t *testing.T, frame []byte) {
		inner, err := h.Decap(frame)
		checkDecap(t, frame, inner, err, h.Len())
		if err != nil {
			return
		}
		// What was accepted is exactly what Encap writes for this peer.
		p := Params{VNI: 1, SrcMAC: [6]byte(frame[14:20]), DstMAC: testLocalMAC}
		hdr := make([]byte, h.Len())
		if err := h.Encap(hdr, &p); err != nil || !bytes.Equal(hdr, frame[:h.Len()]) {
			t.Fatalf("accepted header %x, Encap writes %x (%v)", frame[:h.Len()], hdr, err)
		}
	})
}

// checkDecap asserts the invariants shared by every Decap.
func checkDecap(t *testing.T, frame, inner []byte, err error, hdrLen int) {
	t.Helper()
	if err != nil {
		if inner != nil {
			t.Fatalf("inner returned with error %v", err)
		}
		return
	}
	if len(frame) < hdrLen+20 {
		t.Fatalf("accepted a %d-byte frame", len(frame))
	}
	if !isSubslice(frame, inner) || &inner[0] != &frame[hdrLen] {
		t.Fatal("inner is not a subslice of the frame starting after the header")
	}
	if _, _, err := ParseIPv4(inner); err != nil {
		t.Fatalf("Decap accepted an inner packet ParseIPv4 rejects: %v", err)
	}
}

func FuzzFragNeeded(f *testing.F) {
	f.Add(makeIPv4(ipv4Opts{df: true, payload: make([]byte, 100)}), uint16(1400))
	dst := make([]byte, MaxICMPErrorLen)
	f.Fuzz(func(t *testing.T, orig []byte, mtu uint16) {
		for _, code := range []uint8{4, 0} {
			clear(dst)
			var n int
			if code == 4 {
				n = FragNeeded(dst, orig, tunAddr, int(mtu))
			} else {
				n, mtu = NetUnreachable(dst, orig, tunAddr), 0
			}
			if n == 0 {
				continue
			}
			if n < 20+8+20 || n > MaxICMPErrorLen {
				t.Fatalf("wrote %d bytes", n)
			}
			if _, _, err := ParseIPv4(orig); err != nil {
				t.Fatalf("answered an invalid packet: %v", err)
			}
			reply := dst[:n]
			if _, _, err := ParseIPv4(reply); err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			msg := reply[20:]
			if encaptest.NaiveChecksum(msg, 0) != 0xffff {
				t.Fatal("ICMP checksum does not verify")
			}
			if msg[0] != 3 || msg[1] != code || binary.BigEndian.Uint16(msg[6:]) != mtu {
				t.Fatalf("ICMP header %x", msg[:8])
			}
			if !bytes.HasPrefix(orig, msg[8:]) || !bytes.Equal(reply[16:20], orig[12:16]) {
				t.Fatal("reply does not quote or address the original")
			}
			if binary.BigEndian.Uint16(orig[6:])&0x1fff != 0 {
				t.Fatal("answered a non-first fragment")
			}
		}
	})
}

// TestFuzzSeedsValid keeps the committed corpora meaningful: every seed
// named valid_* must decode, every other one must not.
func TestFuzzSeedsValid(t *testing.T) {
	t.Parallel()
	decoders := map[string]func([]byte) error{
		"FuzzParseIPv4": func(b []byte) error { _, _, err := ParseIPv4(b); return err },
		"FuzzDecapUDP":  func(b []byte) error { _, err := FlannelUDP.Decap(b); return err },
		"FuzzDecapVXLAN": func(b []byte) error {
			_, err := NewVXLAN(1, testLocalMAC).Decap(b)
			return err
		},
	}
	for fuzzer, decode := range decoders {
		files, err := filepath.Glob(filepath.Join("testdata", "fuzz", fuzzer, "*"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: no seed corpus (%v)", fuzzer, err)
		}
		for _, file := range files {
			data := encaptest.CorpusBytes(t, file)
			err := decode(data)
			if valid := strings.HasPrefix(filepath.Base(file), "valid_"); valid != (err == nil) {
				t.Errorf("%s: decode error %v", file, err)
			}
		}
	}
}
