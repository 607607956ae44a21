//go:build eventcore_nochecks

package executor

// skipAdmission: see checks.go. Never build a binary that is used for
// anything but that test with this tag.
const skipAdmission = true
