// Package backoff paces the retries of the control plane: registry calls,
// lease renewals and watches that fail for a while and then recover.
package backoff

import (
	"context"
	"time"
)

// Backoff doubles a delay from Min up to Max. The zero value of its state is
// ready: set Min and Max and call Next before each retry.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// Next returns the delay to wait before the next retry: Min the first time
// and after Reset, then twice the previous delay, never more than Max.
func (b *Backoff) Next() time.Duration {
	b.cur = min(max(b.cur*2, b.Min), b.Max)
	return b.cur
}

// Reset starts again from Min, after a success.
func (b *Backoff) Reset() { b.cur = 0 }

// Sleep waits d, or until ctx is done and then returns ctx's error.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
