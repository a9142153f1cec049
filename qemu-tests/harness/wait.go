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
// is still booting refuses connections); the last one is part of the error
// returned on timeout so that the failure says what went wrong.
func WaitFor(ctx context.Context, timeout time.Duration, what string, cond func(ctx context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(PollInterval)
	defer tick.Stop()
	start := time.Now()
	var last error
	for {
		ok, err := cond(ctx)
		if err == nil && ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("waited %s for %s: %w; last error: %w", time.Since(start).Round(time.Millisecond), what, ctx.Err(), last)
			}
			return fmt.Errorf("waited %s for %s: %w", time.Since(start).Round(time.Millisecond), what, ctx.Err())
		case <-tick.C:
		}
	}
}
