package traffic

import (
	"crypto/sha256"
	"io"
	"testing"
)

func TestSendIsDeterministic(t *testing.T) {
	var sums [2][32]byte
	for i := range sums {
		h := sha256.New()
		sum, err := send(h, 3*chunkSize+17)
		if err != nil {
			t.Fatal(err)
		}
		if got := [32]byte(h.Sum(nil)); got != sum {
			t.Fatalf("send returned %x, but wrote bytes hashing to %x", sum, got)
		}
		sums[i] = sum
	}
	if sums[0] != sums[1] {
		t.Errorf("two streams of the same length differ: %x, %x", sums[0], sums[1])
	}
}

// TestSendAllocations checks that the stream costs the same few allocations
// however long it is.
func TestSendAllocations(t *testing.T) {
	short := testing.AllocsPerRun(5, func() { send(io.Discard, chunkSize) })
	long := testing.AllocsPerRun(5, func() { send(io.Discard, 64*chunkSize) })
	if long != short {
		t.Errorf("send allocates %v times for 1 chunk and %v times for 64", short, long)
	}
}

func BenchmarkSend(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(16 << 20)
	for b.Loop() {
		if _, err := send(io.Discard, 16<<20); err != nil {
			b.Fatal(err)
		}
	}
}
