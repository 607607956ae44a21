package progress

import "time"

// SetThrottle sets the least time between renderings, for a test.
func SetThrottle(d time.Duration) (restore func()) {
	old := throttle
	throttle = d
	return func() { throttle = old }
}
