package main

// TEMPORARY (helper H3): stands in for runVMConsole until helper H2's
// console.go lands; the lead deletes this file then.

import (
	"context"
	"errors"
	"io"

	"github.com/dyad-ha/dyad/services/apiclient"
)

func runVMConsole(ctx context.Context, c *apiclient.Client, args []string, stdin io.Reader, stdout io.Writer) error {
	return errors.New("vm console: not built yet (console_pending.go stands in for console.go)")
}
