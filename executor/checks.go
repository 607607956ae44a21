//go:build !eventcore_nochecks

package executor

// skipAdmission is false in every real build. A binary built with the tag
// eventcore_nochecks admits every command at once: it exists only to show
// that the linearizability check of the HTTP API catches commands that
// race (with the store's version check skipped too).
const skipAdmission = false
