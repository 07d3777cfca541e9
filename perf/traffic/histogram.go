package traffic

import (
	"math"
	"math/bits"
	"time"
)

// The histogram is log-linear over nanoseconds: values below 2^histSubBits
// have a bucket each, and every octave above is split into 2^(histSubBits-1)
// equal buckets, so a bucket is never wider than 1/64 of its values (about
// 0.3 µs at 20 µs, 4 µs at 500 µs). It covers up to 2^histMaxBits ns, about
// 18 minutes; longer values land in the last bucket.
const (
	histSubBits = 7
	histMaxBits = 40
	histBuckets = (histMaxBits-histSubBits+1)<<(histSubBits-1) + 1<<(histSubBits-1)
)

// Histogram records durations, such as round-trip times, in fixed buckets:
// recording never allocates, whatever the count, so it can sit in a
// measurement loop. The zero value is empty and ready to use. Mean, Min and
// Max are exact; quantiles are within a bucket's width (under 1.6 %).
type Histogram struct {
	counts   [histBuckets]uint64
	n        uint64
	sum      time.Duration
	min, max time.Duration
}

// bucketOf is the index of v's bucket: v itself while it is small, then
// shift*half + v>>shift, which runs on continuously from one octave to the
// next.
func bucketOf(v uint64) int {
	const half = 1 << (histSubBits - 1)
	if v >= 1<<histMaxBits {
		return histBuckets - 1
	}
	shift := bits.Len64(v) - histSubBits
	if shift <= 0 {
		return int(v)
	}
	return shift*half + int(v>>shift)
}

// bucketRange is the smallest value of bucket i and its width.
func bucketRange(i int) (lo, width uint64) {
	const half = 1 << (histSubBits - 1)
	if i < 1<<histSubBits {
		return uint64(i), 1
	}
	shift := (i - half) / half
	mantissa := uint64(i - shift*half)
	return mantissa << shift, 1 << shift
}

// Record adds one duration; negative ones count as 0.
func (h *Histogram) Record(d time.Duration) {
	d = max(d, 0)
	h.counts[bucketOf(uint64(d))]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	if d > h.max {
		h.max = d
	}
	h.n++
	h.sum += d
}

// Count is the number of durations recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Mean is the average duration, 0 when empty.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return h.sum / time.Duration(h.n)
}

// Min and Max are the extremes recorded, 0 when empty.
func (h *Histogram) Min() time.Duration { return h.min }
func (h *Histogram) Max() time.Duration { return h.max }

// Quantile is the duration at or below which a fraction q (0 to 1) of the
// recorded ones lie: the nearest-rank definition, rank ceil(q·n), reported
// as the middle of its bucket and kept within [Min, Max], or exactly Min or
// Max for the first and last rank. It is 0 when empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(min(max(q, 0), 1) * float64(h.n)))
	switch {
	case rank <= 1:
		return h.min
	case rank >= h.n:
		return h.max
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, width := bucketRange(i)
			v := time.Duration(lo + width/2)
			return min(max(v, h.min), h.max)
		}
	}
	return h.max // not reached: the counts sum to n
}

// Stats summarises the histogram in microseconds.
func (h *Histogram) Stats() LatencyStats {
	return LatencyStats{
		Count:  int64(h.n),
		MeanUS: micros(h.Mean()),
		MinUS:  micros(h.Min()),
		P50US:  micros(h.Quantile(0.50)),
		P90US:  micros(h.Quantile(0.90)),
		P99US:  micros(h.Quantile(0.99)),
		MaxUS:  micros(h.Max()),
	}
}

// LatencyStats summarises a series of round-trip times, in microseconds.
type LatencyStats struct {
	Count  int64   `json:"count"`
	MeanUS float64 `json:"mean_us"`
	MinUS  float64 `json:"min_us"`
	P50US  float64 `json:"p50_us"`
	P90US  float64 `json:"p90_us"`
	P99US  float64 `json:"p99_us"`
	MaxUS  float64 `json:"max_us"`
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
