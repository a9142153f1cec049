package harness

import (
	"context"
	"fmt"
	"time"
)

// PollInterval is how often WaitFor re-evaluates its condition.
const PollInterval = 100 * time.Millisecond

// WaitFor evaluates cond every PollInterval until it reports true, the
// timeout passes or ctx ends. Errors from cond count as "not yet" (a PM that
// is still booting refuses connections), even together with true; the last
// one is part of the error returned on timeout so that the failure says what
// went wrong. A call of cond cut short by the end of the wait says nothing
// about the state waited for, so its error does not replace the one before.
func WaitFor(ctx context.Context, timeout time.Duration, what string, cond func(ctx context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(PollInterval)
	defer tick.Stop()
	start := time.Now()
	var last error
	// heldWithErr: the last call that produced last reported true with it.
	var heldWithErr bool
	for {
		ok, err := cond(ctx)
		if err == nil && ok {
			return nil
		}
		if err != nil && (last == nil || ctx.Err() == nil) {
			last, heldWithErr = err, ok
		}
		select {
		case <-ctx.Done():
			waited := time.Since(start).Round(time.Millisecond)
			switch {
			case last == nil:
				return fmt.Errorf("waited %s for %s: %w", waited, what, ctx.Err())
			case heldWithErr:
				return fmt.Errorf("waited %s for %s: %w; the condition held but came with an error, which counts as not yet: %w", waited, what, ctx.Err(), last)
			default:
				return fmt.Errorf("waited %s for %s: %w; last error: %w", waited, what, ctx.Err(), last)
			}
		case <-tick.C:
		}
	}
}
