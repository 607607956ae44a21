package projection

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"
)

// A Runner's default owner id is "HOST/PID/UUID": HOST names the machine
// (its hostname and, on Linux, the kernel's boot id, so that two
// micro-VMs with one hostname differ), PID the process. A lease whose
// owner names this machine and a process that no longer runs is taken
// over at once, rather than after LeaseTTL: its runner died (kill -9, an
// OOM kill, a Lambda runtime restarted after a timeout) without giving it
// back. Processes of one machine in different PID namespaces with one
// hostname could mistake a live owner for a dead one; that costs
// contention (the lease passes back and forth, one batch at a time), never
// a double application, which the checkpoint prevents, not the lease. An
// Options.Owner of another form is never taken over before it expires.

// localHost is this machine's part of default owner ids.
var localHost = sync.OnceValue(func() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	host = strings.ReplaceAll(host, "/", "_")
	if id, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		host += "@" + strings.TrimSpace(string(id))
	}
	return host
})

// defaultOwner is a new owner id of this process.
func defaultOwner() string {
	return fmt.Sprintf("%s/%d/%s", localHost(), os.Getpid(), uuid.NewString())
}

// deadLocalOwner reports whether owner is a default owner id of another
// process of this machine that no longer runs.
func deadLocalOwner(owner string) bool {
	host, rest, ok := strings.Cut(owner, "/")
	if !ok || host != localHost() {
		return false
	}
	pidText, _, ok := strings.Cut(rest, "/")
	if !ok {
		return false
	}
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	return processGone(pid)
}
