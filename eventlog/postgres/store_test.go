package postgres_test

import (
	"context"
	"testing"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/eventlogtest"
	"github.com/eventcore-go/eventcore/eventlog/postgres"
	"github.com/eventcore-go/eventcore/eventlog/postgres/pgtest"
)

func TestConformance(t *testing.T) {
	configs := []struct {
		name string
		opts postgres.Options
	}{
		{"Default", postgres.Options{}},
		{"OneWriterNoBatch", postgres.Options{Writers: 1, MaxBatch: 1, MaxConns: 3}},
	}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			eventlogtest.Run(t, func(t *testing.T) eventlog.Store {
				return openStore(t, pgtest.NewDatabase(t), c.opts)
			})
		})
	}
}

// openStore opens the store at url and closes it when the test ends.
func openStore(t testing.TB, url string, opts postgres.Options) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), url, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}
