//go:build !eventcore_nochecks

package sqlite

// skipVersionCheck is false in every real build. A binary built with the
// tag eventcore_nochecks appends whatever versions it is told to expect:
// it exists only to show that the linearizability check of the HTTP API
// catches a store that does not check versions.
const skipVersionCheck = false
