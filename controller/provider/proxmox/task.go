package proxmox

import (
	"context"
	"fmt"
	"time"

	pve "github.com/luthermonson/go-proxmox"
)

// waiter polls Proxmox for tasks and states on a clock.
type waiter struct {
	clock Clock
	// poll is the first polling interval; it doubles up to maxPoll.
	poll, maxPoll time.Duration
}

func (w waiter) interval(i time.Duration) time.Duration {
	if i <= 0 {
		return w.poll
	}
	return min(2*i, w.maxPoll)
}

// transientTolerance is how many polls in a row may fail (a request
// timeout, a connection reset) before the poll gives up.
const transientTolerance = 3

// waitTask waits for a task to stop and checks its exit status itself:
// go-proxmox's Task.Wait returns nil for a failed task, and its
// IsSuccessful is false for "WARNINGS: n", which is a success. A nil task
// (PVE 7 answers some requests synchronously) is done.
func (w waiter) waitTask(ctx context.Context, t *pve.Task, timeout time.Duration) error {
	if t == nil {
		return nil
	}
	deadline := w.clock.Now().Add(timeout)
	var iv time.Duration
	failures := 0
	for {
		err := t.Ping(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil && (isUnauthorized(err) || failures >= transientTolerance):
			return fmt.Errorf("task %s: status: %w", t.UPID, err)
		case err != nil:
			failures++
		case t.Status != pve.TaskRunning && t.Status != "":
			if taskSucceeded(t.ExitStatus) {
				return nil
			}
			return &TaskError{UPID: string(t.UPID), Type: t.Type, Exit: t.ExitStatus}
		default:
			failures = 0
		}
		if !w.clock.Now().Before(deadline) {
			return fmt.Errorf("task %s (%s) still running after %s", t.Type, t.UPID, timeout)
		}
		iv = w.interval(iv)
		if err := w.clock.Sleep(ctx, iv); err != nil {
			return err
		}
	}
}
