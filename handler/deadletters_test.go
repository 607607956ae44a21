package handler_test

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/handler"
	"github.com/eventcore-go/eventcore/projection"
)

// picky is a projector that skips (dead-letters) every event of type Bad.
type picky struct{}

func (picky) Name() string                         { return "picky" }
func (picky) Setup(context.Context, *sql.Tx) error { return nil }
func (picky) Reset(context.Context, *sql.Tx) error { return nil }
func (picky) FailurePolicy() projection.FailurePolicy {
	return projection.FailurePolicy{Strategy: projection.Skip}
}
func (picky) Apply(_ context.Context, _ *sql.Tx, r eventlog.Record) error {
	if r.Type == "Bad" {
		return errors.New("cannot apply a Bad event")
	}
	return nil
}

func TestDeadLettersRoute(t *testing.T) {
	reg := handler.NewRegistry()
	reg.Projection(picky{})
	a := openHandlers(t, reg, slog.New(slog.DiscardHandler))
	appendRaw(t, a.Store, "s-1", "Good", `{}`)
	appendRaw(t, a.Store, "s-1", "Bad", `{"n":1}`)
	appendRaw(t, a.Store, "s-2", "Good", `{}`)
	get := func(path, query string) (int, string) {
		resp := serve(context.Background(), a.Project, http.MethodGet, uri(path, query), nil, "")
		return resp.StatusCode, resp.Body
	}
	if status, body := get("/projections/picky/dead-letters", ""); status != http.StatusOK || body != `{"dead_letters":[],"projection":"picky"}` {
		t.Fatalf("before catch-up: %d %s", status, body)
	}
	if _, err := a.Project.CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	status, body := get("/projections/picky/dead-letters", "")
	if status != http.StatusOK || !strings.Contains(body, `"position":2,"stream":"s-1","version":2,"type":"Bad","error":"cannot apply a Bad event"`) {
		t.Fatalf("after catch-up: %d %s", status, body)
	}
	if _, body := get("/projections", ""); !strings.Contains(body, `{"name":"picky","checkpoint":3,"head":3,"lag":0,"dead_letters":1}`) {
		t.Fatalf("/projections: %s", body)
	}
	if status, body := get("/projections/nope/dead-letters", ""); status != http.StatusNotFound || !strings.Contains(body, `"unknown_projection"`) {
		t.Fatalf("unknown projection: %d %s", status, body)
	}
	if status, _ := get("/projections/picky/dead-letters", "limit=0"); status != http.StatusBadRequest {
		t.Fatalf("limit=0: %d", status)
	}
}

func TestRebuildByDirectInvocation(t *testing.T) {
	e := newEnv(t)
	e.openBank()
	e.catchUp()
	// Damage the read model behind the projection's back; a rebuild
	// replays the log and repairs it.
	if res, err := e.ReadDB.Exec(`UPDATE bank_balances SET balance = 999`); err != nil {
		t.Fatal(err)
	} else if n, _ := res.RowsAffected(); n == 0 {
		t.Fatal("no balances to damage")
	}
	out, err := e.Project.Invoke(context.Background(), []byte(`{"rebuild":"balances"}`))
	if err != nil {
		t.Fatal(err)
	}
	report, ok := out.(handler.ScheduleReport)
	if !ok || len(report.Projections) != 2 {
		t.Fatalf("report %#v", out)
	}
	var wrong int
	if err := e.ReadDB.QueryRow(`SELECT COUNT(*) FROM bank_balances WHERE balance = 999`).Scan(&wrong); err != nil || wrong != 0 {
		t.Fatalf("after rebuild: %d balances still damaged (%v)", wrong, err)
	}
	if _, err := e.Project.Invoke(context.Background(), []byte(`{"rebuild":"nope"}`)); !errors.Is(err, projection.ErrUnknownProjection) {
		t.Fatalf("rebuild of an unknown projection: %v", err)
	}
}
