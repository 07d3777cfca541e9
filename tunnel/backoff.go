package tunnel

import (
	"context"
	"time"
)

// backoff doubles a wait from min up to max.
type backoff struct{ next, max time.Duration }

func newBackoff(min, max time.Duration) *backoff { return &backoff{next: min, max: max} }

func (b *backoff) peek() time.Duration { return b.next }

// wait sleeps for the current delay, then doubles it; it returns early with
// ctx's error when ctx is done.
func (b *backoff) wait(ctx context.Context) error {
	t := time.NewTimer(b.next)
	defer t.Stop()
	b.next = min(2*b.next, b.max)
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
