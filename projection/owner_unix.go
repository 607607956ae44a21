//go:build unix

package projection

import (
	"errors"
	"syscall"
)

// processGone reports whether no process has id pid (signal 0 finds none);
// a process of another user still counts as running.
func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}
