package metrics_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/metrics"
)

// failingStore answers every append with its error.
type failingStore struct {
	eventlog.Store
	err error
}

func (s failingStore) Append(context.Context, eventlog.AppendRequest) (eventlog.AppendResult, error) {
	return eventlog.AppendResult{}, s.err
}

func TestStorageErrorsAreCounted(t *testing.T) {
	m := metrics.New(metrics.Sources{})
	for _, err := range []error{
		fmt.Errorf("sqlite: append: %w: disk full", eventlog.ErrStorageFull),
		fmt.Errorf("sqlite: append: %w: disk full", eventlog.ErrStorageFull),
		fmt.Errorf("sqlite: append: %w: fsync", eventlog.ErrStorageUnavailable),
		fmt.Errorf("sqlite: append: %w", eventlog.ErrConflict),
	} {
		_, _ = metrics.InstrumentStore(failingStore{err: err}, m).Append(context.Background(), eventlog.AppendRequest{})
	}
	got := map[string]float64{}
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "eventcore_storage_errors_total" {
			continue
		}
		for _, c := range f.GetMetric() {
			got[c.GetLabel()[0].GetValue()] = c.GetCounter().GetValue()
		}
	}
	if got[metrics.StorageFull] != 2 || got[metrics.StorageIO] != 1 || len(got) != 2 {
		t.Fatalf("eventcore_storage_errors_total: %v; want full 2, io 1", got)
	}
}
