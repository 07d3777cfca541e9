package traffic

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestBuckets checks that every value falls in the bucket bucketRange
// describes, that buckets are in order and never wider than 1/64 of their
// values.
func TestBuckets(t *testing.T) {
	check := func(v uint64) {
		i := bucketOf(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("bucketOf(%d) = %d, out of [0, %d)", v, i, histBuckets)
		}
		lo, width := bucketRange(i)
		if v < lo || v >= lo+width {
			t.Fatalf("%d in bucket %d = [%d, %d)", v, i, lo, lo+width)
		}
		if lo >= 1<<histSubBits && width*64 > lo {
			t.Fatalf("bucket %d = [%d, %d) is wider than 1/64 of its values", i, lo, lo+width)
		}
	}
	for v := range uint64(1 << 16) {
		check(v)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		check(r.Uint64N(1 << histMaxBits))
	}
	check(1<<histMaxBits - 1)
	prev := -1
	for i := range histBuckets {
		lo, width := bucketRange(i)
		if bucketOf(lo) != i || bucketOf(lo+width-1) != i {
			t.Fatalf("bucket %d = [%d, %d): its ends map to %d and %d", i, lo, lo+width, bucketOf(lo), bucketOf(lo+width-1))
		}
		if i <= prev {
			t.Fatal("buckets out of order")
		}
		prev = i
	}
	if got := bucketOf(1 << 62); got != histBuckets-1 {
		t.Errorf("a value beyond the range lands in bucket %d, want the last, %d", got, histBuckets-1)
	}
}

func TestHistogramEmpty(t *testing.T) {
	var h Histogram
	if h.Count() != 0 || h.Mean() != 0 || h.Min() != 0 || h.Max() != 0 || h.Quantile(0.5) != 0 {
		t.Errorf("empty histogram: %+v", h.Stats())
	}
	if s := h.Stats(); s != (LatencyStats{}) {
		t.Errorf("empty stats = %+v, want zero", s)
	}
}

// TestHistogramQuantiles records 1..1000 µs once each: the nearest-rank
// p50 is 500 µs and p99 990 µs, within a bucket's width.
func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	for _, i := range rand.New(rand.NewPCG(3, 4)).Perm(1000) {
		h.Record(time.Duration(i+1) * time.Microsecond)
	}
	s := h.Stats()
	if s.Count != 1000 || s.MinUS != 1 || s.MaxUS != 1000 || s.MeanUS != 500.5 {
		t.Errorf("count, min, max, mean = %d, %v, %v, %v; want 1000, 1, 1000, 500.5 exactly", s.Count, s.MinUS, s.MaxUS, s.MeanUS)
	}
	for _, tt := range []struct {
		q    float64
		want float64 // µs
	}{{0, 1}, {0.001, 1}, {0.5, 500}, {0.9, 900}, {0.99, 990}, {1, 1000}} {
		got := float64(h.Quantile(tt.q)) / float64(time.Microsecond)
		if got < tt.want*(1-1.0/64) || got > tt.want*(1+1.0/64) {
			t.Errorf("Quantile(%v) = %v µs, want %v within 1/64", tt.q, got, tt.want)
		}
	}
	if !(s.P50US <= s.P90US && s.P90US <= s.P99US && s.P99US <= s.MaxUS) {
		t.Errorf("percentiles out of order: %+v", s)
	}
}

// TestHistogramSkewed is a round-trip shape: most at ~20 µs, 2 % at ~400 µs.
// p50 must come from the bulk and p99 from the tail.
func TestHistogramSkewed(t *testing.T) {
	var h Histogram
	for i := range 10000 {
		d := 20*time.Microsecond + time.Duration(i%7)*100*time.Nanosecond
		if i%50 == 0 {
			d = 400 * time.Microsecond
		}
		h.Record(d)
	}
	if p50 := h.Quantile(0.5); p50 < 19*time.Microsecond || p50 > 21*time.Microsecond {
		t.Errorf("p50 = %v, want about 20µs", p50)
	}
	if p99 := h.Quantile(0.99); p99 < 394*time.Microsecond || p99 > 400*time.Microsecond {
		t.Errorf("p99 = %v, want about 400µs (and not above the max)", p99)
	}
}

func TestHistogramOneValue(t *testing.T) {
	var h Histogram
	h.Record(123456 * time.Nanosecond)
	h.Record(-time.Second) // counts as 0
	if h.Min() != 0 || h.Max() != 123456 || h.Quantile(1) != 123456 {
		t.Errorf("min %v max %v p100 %v; want 0, 123.456µs, 123.456µs (clamped to the max)", h.Min(), h.Max(), h.Quantile(1))
	}
}

func TestHistogramRecordAllocs(t *testing.T) {
	h := new(Histogram)
	d := time.Duration(0)
	if n := testing.AllocsPerRun(1000, func() {
		d += 777
		h.Record(d)
	}); n != 0 {
		t.Errorf("Record allocates %v times", n)
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	h := new(Histogram)
	b.ReportAllocs()
	for i := range b.N {
		h.Record(time.Duration(i&0xfffff) * 97)
	}
}
