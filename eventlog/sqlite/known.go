package sqlite

import (
	"sync"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
)

// knownFor is how long what the writer knows of stream versions is
// trusted after the last check that no other process wrote the file: a
// commit checks that at most every dataVersionEvery, and an idle writer
// checks nothing.
const knownFor = time.Second

// known is the version of the streams this process wrote, as its writer
// committed them, so that a version probe does not ask the database what
// the process already knows. It is trusted only while no other process has
// written the file (the writer connection's PRAGMA data_version, checked by
// a commit at most every dataVersionEvery, says when one did) and for
// knownFor after the last check.
// Versions only grow, so a stale entry can only be lower than the truth:
// the append's version check then refuses the command, which costs a retry
// (and forgets the streams involved), never a wrong decision. It is never
// lower than this process's own commits, even while a reader can already
// see one that committed records not yet: a batch's streams are forgotten
// before its COMMIT and recorded after it (a repeated command's outcome,
// which wrote nothing, changes nothing). Safe for concurrent use.
type known struct {
	mu       sync.Mutex
	versions map[eventlog.StreamID]eventlog.Version
	checked  time.Time // the last commit that found no other writer
}

func newKnown() *known {
	return &known{versions: map[eventlog.StreamID]eventlog.Version{}}
}

// committed records the versions a commit's outcomes wrote; checked says
// whether the commit
// checked for another process's writes, and external whether it found
// some since the last check, in which case everything known before is
// forgotten.
func (k *known) committed(outcomes []appendOutcome, external, checked bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if external {
		clear(k.versions)
	}
	if checked {
		k.checked = time.Now()
	}
	for _, o := range outcomes {
		if o.result.Duplicate {
			continue // the records of an earlier commit
		}
		for i := range o.result.Records {
			r := &o.result.Records[i]
			if r.Version > k.versions[r.Stream] {
				k.versions[r.Stream] = r.Version
			}
		}
	}
}

// committing forgets the streams outcomes write, before their commit: a
// reader sees a commit before committed records it, and a probe must not
// answer below what a reader saw.
func (k *known) committing(outcomes []appendOutcome) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, o := range outcomes {
		if o.result.Duplicate {
			continue // nothing written
		}
		for i := range o.result.Records {
			delete(k.versions, o.result.Records[i].Stream)
		}
	}
}

// forget drops what is known of streams (a version check refused them).
func (k *known) forget(streams []eventlog.StreamID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, s := range streams {
		delete(k.versions, s)
	}
}

// forgetAll drops everything known (the writer reopened its connection).
func (k *known) forgetAll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	clear(k.versions)
	k.checked = time.Time{}
}

// lookup fills out with the known versions of streams and reports whether
// every one of them is known and still trusted.
func (k *known) lookup(streams []eventlog.StreamID, out []eventlog.Version) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if time.Since(k.checked) > knownFor {
		return false
	}
	for i, s := range streams {
		v, ok := k.versions[s]
		if !ok {
			return false
		}
		out[i] = v
	}
	return true
}
