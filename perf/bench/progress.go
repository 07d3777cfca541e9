package bench

import (
	"fmt"
	"time"
)

// progress estimates the time a run has left. Every trial has a nominal
// cost in seconds (setup, each test's duration and overhead); the time
// left is the nominal cost still ahead scaled by how long the nominal cost
// done so far really took, which absorbs a slow machine and slow setups.
type progress struct {
	now   func() time.Time
	start time.Time
	total float64 // nominal seconds of the whole run, as now planned
	done  float64 // nominal seconds done
	// perTrial is the nominal cost assumed for a trial not yet set up.
	perTrial float64
}

func newProgress(now func() time.Time, trials int, perTrial float64) *progress {
	return &progress{now: now, start: now(), total: float64(trials) * perTrial, perTrial: perTrial}
}

// trialProgress is one trial's share of the run.
type trialProgress struct {
	p        *progress
	expected float64 // nominal cost it counts for in total
	spent    float64 // nominal cost done
}

func (p *progress) startTrial() *trialProgress {
	return &trialProgress{p: p, expected: p.perTrial}
}

// planned replaces the trial's assumed cost with its plan, once its
// testbed is up (the sweep points depend on its MTU), and counts the setup
// as done.
func (t *trialProgress) planned(setup, tests float64) {
	t.p.total += setup + tests - t.expected
	t.expected = setup + tests
	t.add(setup)
}

func (t *trialProgress) add(nominal float64) {
	t.spent += nominal
	t.p.done += nominal
}

// done ends the trial: what it skipped (a failed setup, an interruption)
// leaves the total.
func (t *trialProgress) done() {
	t.p.total -= t.expected - t.spent
	t.expected = t.spent
}

// left is the estimated time left; ok is false before anything is done.
func (p *progress) left() (_ time.Duration, ok bool) {
	if p.done <= 0 {
		return 0, false
	}
	rate := p.now().Sub(p.start).Seconds() / p.done
	return time.Duration(max(p.total-p.done, 0) * rate * float64(time.Second)), true
}

// status is a progress line's tail: the share done and the time left.
func (p *progress) status() string {
	pct := 0.0
	if p.total > 0 {
		pct = 100 * min(p.done/p.total, 1)
	}
	left, ok := p.left()
	if !ok {
		left = time.Duration((p.total - p.done) * float64(time.Second))
	}
	return fmt.Sprintf("%3.0f%%, ~%s left", pct, roughly(left))
}

// roughly writes a duration as a person estimating it would.
func roughly(d time.Duration) string {
	switch {
	case d >= 2*time.Minute:
		return fmt.Sprintf("%d min", int(d.Round(time.Minute)/time.Minute))
	case d >= 10*time.Second:
		return fmt.Sprintf("%d s", int(d.Round(10*time.Second)/time.Second))
	default:
		return fmt.Sprintf("%d s", int(d.Round(time.Second)/time.Second))
	}
}
