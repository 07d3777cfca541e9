package bench

import (
	"testing"
	"time"
)

// TestProgress drives the estimate with a fake clock: the time left is the
// nominal cost ahead at the pace of the work done so far.
func TestProgress(t *testing.T) {
	now := time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	p := newProgress(clock, 4, 100) // four trials of 100 nominal seconds
	if got := p.status(); got != "  0%, ~7 min left" {
		t.Errorf("before anything: %q", got)
	}
	tr := p.startTrial()
	tr.planned(10, 90)
	now = now.Add(20 * time.Second) // twice the nominal pace
	if left, ok := p.left(); !ok || left != 780*time.Second {
		t.Errorf("after setup: %v %v, want 13 min (390 nominal s at half speed)", left, ok)
	}
	tr.add(90)
	tr.done()
	failed := p.startTrial() // a setup that fails takes its trial out
	failed.done()
	if p.total != 300 || p.done != 100 {
		t.Errorf("total %g, done %g; want 300, 100", p.total, p.done)
	}
	// 200 nominal seconds left at the pace so far, 0.2 s each.
	if got := p.status(); got != " 33%, ~40 s left" {
		t.Errorf("status %q, want 33%%, ~40 s left", got)
	}
}

func TestRoughly(t *testing.T) {
	for d, want := range map[time.Duration]string{
		3 * time.Second:   "3 s",
		44 * time.Second:  "40 s",
		150 * time.Second: "3 min",
		25 * time.Minute:  "25 min",
	} {
		if got := roughly(d); got != want {
			t.Errorf("roughly(%s) = %q, want %q", d, got, want)
		}
	}
}
