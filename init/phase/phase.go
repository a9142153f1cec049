// Package phase runs boot phases declared as data, timing and logging each,
// so the boot sequence of PID 1 reads as one list.
package phase

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"
)

// Phase is one step of booting. Run gets the state shared by all phases.
type Phase[S any] struct {
	Name string
	Run  func(ctx context.Context, s S) error
	// Critical phases stop the boot when they fail; the others are logged and
	// the boot goes on.
	Critical bool
}

// Run runs phases in order and returns the error of the first critical phase
// that failed. A panic inside a phase is turned into its error: PID 1 must
// survive its own bugs.
func Run[S any](ctx context.Context, log *slog.Logger, phases []Phase[S], s S) error {
	for _, p := range phases {
		start := time.Now()
		err := runOne(ctx, p, s)
		took := time.Since(start).Round(time.Microsecond)
		if err == nil {
			log.Info(fmt.Sprintf("dyad-init: phase %s ok in %v", p.Name, took))
			continue
		}
		if p.Critical {
			log.Error(fmt.Sprintf("dyad-init: phase %s failed after %v", p.Name, took), "err", err, "critical", true)
			return fmt.Errorf("critical phase %s: %w", p.Name, err)
		}
		log.Warn(fmt.Sprintf("dyad-init: phase %s failed after %v; continuing", p.Name, took), "err", err)
	}
	return nil
}

func runOne[S any](ctx context.Context, p Phase[S], s S) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	return p.Run(ctx, s)
}
