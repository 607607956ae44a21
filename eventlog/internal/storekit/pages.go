package storekit

import (
	"iter"

	"github.com/eventcore-go/eventcore/eventlog"
)

// ReadPages is ReadStream over a store that fetches a stream in pages:
// fetch returns up to pageSize records of stream after a version, in
// version order; a shorter page is the last. It refuses a zero stream id
// (eventlog.ErrInvalid) and yields the first error once, ending the
// sequence. No page is fetched while the caller's loop body runs a record
// of the one before.
func ReadPages(stream eventlog.StreamID, after eventlog.Version, pageSize int, fetch func(after eventlog.Version) ([]eventlog.Record, error)) iter.Seq2[eventlog.Record, error] {
	return func(yield func(eventlog.Record, error) bool) {
		if stream.IsZero() {
			yield(eventlog.Record{}, &eventlog.InvalidError{What: "stream id", Reason: "must not be empty"})
			return
		}
		for {
			page, err := fetch(after)
			if err != nil {
				yield(eventlog.Record{}, err)
				return
			}
			for _, r := range page {
				if !yield(r, nil) {
					return
				}
			}
			if len(page) < pageSize {
				return
			}
			after = page[len(page)-1].Version
		}
	}
}
