package postgres

// QueuedAppends returns how many appends wait in s's queue for a writer
// loop to take them: tests use it to know that appends will share a batch
// instead of sleeping for it.
func QueuedAppends(s *Store) int { return len(s.com.calls) }
