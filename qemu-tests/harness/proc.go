package harness

import (
	"os/exec"
	"runtime"
)

// startHeld starts cmd from an OS thread held until cmd exits: a child's
// Pdeathsig fires when the thread that forked it exits, not the process, so
// the thread must live as long as the child for the signal to end the child
// only with the test process. exited is closed once cmd has exited, with
// cmd.Wait's error in *werr (werr may be nil).
func startHeld(cmd *exec.Cmd, exited chan<- struct{}, werr *error) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		err := cmd.Wait()
		if werr != nil {
			*werr = err
		}
		close(exited)
	}()
	return <-started
}
