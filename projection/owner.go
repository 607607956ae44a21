package projection

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"
)

// A Runner's default owner id is "HOST/PID@START/UUID": HOST names the
// machine (its hostname and, on Linux, the kernel's boot id, so that two
// micro-VMs with one hostname differ), PID the process and START when it
// started (Linux: clock ticks since boot; elsewhere left out, with the
// "@"). A lease whose owner names this machine and a process that no
// longer runs is taken over at once, rather than after LeaseTTL: its
// runner died (kill -9, an OOM kill, a Lambda runtime restarted after a
// timeout) without giving it back. With START, a process that reuses the
// dead one's PID (a container restarted in place often runs as the same
// PID) is not mistaken for it. Processes of one machine in different PID
// namespaces under one hostname could mistake a live owner for a dead
// one; that costs contention (the lease passes back and forth, one batch
// at a time), never a double application, which the checkpoint prevents,
// not the lease. An Options.Owner of another form is never taken over
// before it expires.

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

// selfStart is when this process started, "" when unknown.
var selfStart = sync.OnceValue(func() string { return processStart(os.Getpid()) })

// defaultOwner is a new owner id of this process.
func defaultOwner() string {
	return fmt.Sprintf("%s/%d@%s/%s", localHost(), os.Getpid(), selfStart(), uuid.NewString())
}

// deadLocalOwner reports whether owner is a default owner id of another
// process of this machine that no longer runs.
func deadLocalOwner(owner string) bool {
	host, rest, ok := strings.Cut(owner, "/")
	if !ok || host != localHost() {
		return false
	}
	process, _, ok := strings.Cut(rest, "/")
	if !ok {
		return false
	}
	pidText, start, _ := strings.Cut(process, "@")
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid <= 0 {
		return false
	}
	if pid == os.Getpid() {
		// This process, or an earlier one that ran as the same PID.
		return start != "" && selfStart() != "" && start != selfStart()
	}
	if processGone(pid) {
		return true
	}
	// A process runs as pid: the owner's, unless it started at another time.
	now := processStart(pid)
	return start != "" && now != "" && start != now
}

// processStart is when process pid started, from Linux's /proc/PID/stat
// (field 22, after the command name in parentheses), or "" when unknown.
func processStart(pid int) string {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return ""
	}
	fields := strings.Fields(string(stat[i+1:]))
	// fields[0] is field 3 (the state); the start time is field 22.
	if len(fields) < 20 {
		return ""
	}
	return fields[19]
}
