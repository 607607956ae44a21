//go:build linux || darwin || freebsd

package sqlite

import "syscall"

// lowSpace is the free space under which a filesystem counts as full.
const lowSpace = 256 << 10

// lowOnSpace reports whether the filesystem of dir has less than lowSpace
// bytes available to this process.
func lowOnSpace(dir string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return false
	}
	return uint64(st.Bavail)*uint64(st.Bsize) < lowSpace //nolint:unconvert // the field types differ between systems
}
