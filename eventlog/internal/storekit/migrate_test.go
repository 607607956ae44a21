package storekit

import (
	"context"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// scriptTx records the statements run and answers the version query.
type scriptTx struct {
	version int
	ran     []string
}

func (s *scriptTx) Exec(_ context.Context, query string, args ...any) error {
	s.ran = append(s.ran, query)
	if strings.HasPrefix(query, "INSERT") {
		s.version = args[0].(int)
	}
	return nil
}

func (s *scriptTx) QueryInt(context.Context, string) (int, error) { return s.version, nil }

func TestMigrateRunsOnlyWhatIsNew(t *testing.T) {
	fsys := fstest.MapFS{
		"migrations/0002_b.sql": {Data: []byte("B")},
		"migrations/0001_a.sql": {Data: []byte("A")},
		"migrations/0003_c.sql": {Data: []byte("C")},
	}
	tx := &scriptTx{version: 1}
	if err := Migrate(context.Background(), tx, fsys, "v"); err != nil {
		t.Fatal(err)
	}
	scripts := slices.DeleteFunc(slices.Clone(tx.ran), func(q string) bool { return len(q) > 1 })
	if !slices.Equal(scripts, []string{"B", "C"}) || tx.version != 3 {
		t.Fatalf("ran %q, version %d; want B and C, version 3", tx.ran, tx.version)
	}
	again := &scriptTx{version: 3}
	if err := Migrate(context.Background(), again, fsys, "v"); err != nil || len(again.ran) != 1 {
		t.Fatalf("an up-to-date database ran %q (%v)", again.ran, err)
	}
	if err := Migrate(context.Background(), &scriptTx{version: 4}, fsys, "v"); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("a newer database: %v", err)
	}
}
