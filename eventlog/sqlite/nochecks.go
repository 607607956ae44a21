//go:build eventcore_nochecks

package sqlite

// skipVersionCheck: see checks.go. Never build a binary that is used for
// anything but that test with this tag.
const skipVersionCheck = true
