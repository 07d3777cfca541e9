package encap

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"testing"

	"github.com/overlayd/overlayd/encap/encaptest"
)

func TestChecksumMatchesNaive(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 4096)
	for i := 0; i < 20000; i++ {
		n := rng.IntN(len(buf))
		if i < 100 {
			n = i // every short length and every tail shape
		}
		b := buf[:n]
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if i%7 == 0 {
			for j := range b { // all ones: the carry path
				b[j] = 0xff
			}
		}
		initial := rng.Uint32()
		if i%3 == 0 {
			initial = 0
		}
		if got, want := Checksum(b, initial), encaptest.NaiveChecksum(b, initial); got != want {
			t.Fatalf("len %d initial %#x: Checksum = %#04x, naive = %#04x", n, initial, got, want)
		}
	}
}

func TestChecksumChains(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, 1501)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	for split := 0; split <= len(b); split += 2 {
		chained := Checksum(b[split:], uint32(Checksum(b[:split], 0)))
		if whole := Checksum(b, 0); chained != whole {
			t.Fatalf("split at %d: chained %#04x, whole %#04x", split, chained, whole)
		}
	}
}

func TestFold(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   uint64
		want uint16
	}{
		{0, 0},
		{1, 1},
		{0xffff, 0xffff},
		{0x10000, 1},
		{0x1fffe, 0xffff},
		{math.MaxUint32, 0xffff},
		{math.MaxUint64, 0xffff},
		{0x0001_0001_0001_0001, 4},
		{0xffff_0000_0000_0001, 1},
	} {
		if got := Fold(tc.in); got != tc.want {
			t.Errorf("Fold(%#x) = %#04x, want %#04x", tc.in, got, tc.want)
		}
	}
}

func TestPseudoHeaderSum(t *testing.T) {
	t.Parallel()
	src, dst := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	want := encaptest.NaiveChecksum([]byte{198, 18, 0, 1, 198, 18, 0, 2, 0, 17, 0x00, 0x34}, 0)
	if got := PseudoHeaderSum(src, dst, 17, 0x34); uint16(got) != want {
		t.Errorf("IPv4: %#04x, want %#04x", got, want)
	}
	src6, dst6 := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	a, b := src6.As16(), dst6.As16()
	ph := append(append(a[:], b[:]...), 0, 0, 0, 8, 0, 0, 0, 17)
	if got, want := PseudoHeaderSum(src6, dst6, 17, 8), encaptest.NaiveChecksum(ph, 0); uint16(got) != want {
		t.Errorf("IPv6: %#04x, want %#04x", got, want)
	}
}

func TestChecksumAllocs(t *testing.T) {
	b := make([]byte, 1500)
	if n := testing.AllocsPerRun(1000, func() { Checksum(b, 0) }); n != 0 {
		t.Errorf("Checksum allocates %v times", n)
	}
}

func BenchmarkChecksum(b *testing.B) {
	for _, size := range []int{20, 64, 1500, 65535} {
		buf := make([]byte, size)
		for i := range buf {
			buf[i] = byte(i)
		}
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				Checksum(buf, 0)
			}
		})
	}
}

func BenchmarkChecksumNaive(b *testing.B) {
	buf := make([]byte, 1500)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		encaptest.NaiveChecksum(buf, 0)
	}
}
