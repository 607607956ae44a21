package handler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/examples/bank/bankapi"
	"github.com/eventcore-go/eventcore/handler"
)

// A command is acknowledged only once Durable succeeds; when it fails the
// answer is 503 with a code saying why, and a retry with the same key
// answers the first execution's events once the replica is back.
func TestDurableGatesTheAnswer(t *testing.T) {
	e := newEnv(t)
	var fail atomic.Pointer[error]
	calls := atomic.Int64{}
	reg := handler.NewRegistry()
	bankapi.Register(reg)
	x := handler.NewExecute(reg, e.Store, handler.ExecuteOptions{Durable: func(context.Context) error {
		calls.Add(1)
		if err := fail.Load(); err != nil {
			return *err
		}
		return nil
	}})
	post := func(body, key string) (int, string) {
		resp := serve(context.Background(), x, http.MethodPost, "/commands/open-account", map[string]string{"idempotency-key": key}, body)
		return resp.StatusCode, resp.Body
	}
	if status, body := post(`{"account":"a1","owner":"A"}`, "k1"); status != 200 {
		t.Fatalf("healthy replica: %d %s", status, body)
	}
	for _, c := range []struct {
		err  error
		code string
	}{
		{fmt.Errorf("%w: bucket unreachable", eventlog.ErrUnavailable), "replica_unavailable"},
		{fmt.Errorf("%w: lease lost after the append", eventlog.ErrNotWriter), "replica_unavailable"},
	} {
		fail.Store(&c.err)
		status, body := post(`{"account":"a2","owner":"B"}`, "k2")
		var got struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.Unmarshal([]byte(body), &got)
		if status != http.StatusServiceUnavailable || got.Error.Code != c.code {
			t.Fatalf("durable failing with %v: %d %s, want 503 %s", c.err, status, body, c.code)
		}
	}
	fail.Store(nil)
	status, body := post(`{"account":"a2","owner":"B"}`, "k2")
	var ok handler.CommandResponse
	if err := json.Unmarshal([]byte(body), &ok); status != 200 || err != nil || len(ok.Events) != 1 || ok.Events[0].Position != 2 {
		t.Fatalf("retry after the replica came back: %d %s", status, body)
	}
	// A refusal rests on state that must be durable too: it waits for the
	// sync, and is not answered as a refusal when the sync fails.
	before := calls.Load()
	if status, body := post(`{"account":"a2","owner":"B"}`, ""); status != http.StatusUnprocessableEntity {
		t.Fatalf("opening an open account: %d %s", status, body)
	}
	if calls.Load() != before+1 {
		t.Fatal("a refusal was answered without a sync")
	}
	down := fmt.Errorf("%w: bucket unreachable", eventlog.ErrUnavailable)
	fail.Store(&down)
	if status, body := post(`{"account":"a2","owner":"B"}`, ""); status != http.StatusServiceUnavailable || !strings.Contains(body, "replica_unavailable") {
		t.Fatalf("a refusal with the replica down: %d %s", status, body)
	}
	// Invalid input rests on nothing stored: no sync.
	fail.Store(nil)
	before = calls.Load()
	if status, _ := post(`{"account":"","owner":"B"}`, ""); status != http.StatusBadRequest {
		t.Fatalf("invalid input answered %d", status)
	}
	if calls.Load() != before {
		t.Fatal("Durable called for invalid input")
	}
}

// notWriterStore refuses every append as a process without the lease.
type notWriterStore struct{ eventlog.Store }

func (notWriterStore) Append(context.Context, eventlog.AppendRequest) (eventlog.AppendResult, error) {
	return eventlog.AppendResult{}, fmt.Errorf("%w: lease held by b", eventlog.ErrNotWriter)
}

func TestAppendRefusedWithoutTheLease(t *testing.T) {
	e := newEnv(t)
	reg := handler.NewRegistry()
	bankapi.Register(reg)
	x := handler.NewExecute(reg, notWriterStore{e.Store}, handler.ExecuteOptions{})
	resp := serve(context.Background(), x, http.MethodPost, "/commands/open-account", nil, `{"account":"a1","owner":"A"}`)
	var got struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal([]byte(resp.Body), &got)
	if resp.StatusCode != http.StatusServiceUnavailable || got.Error.Code != "writer_unavailable" {
		t.Fatalf("append refused for the lease: %d %s", resp.StatusCode, resp.Body)
	}
	if h := e.head(); h != 0 {
		t.Fatalf("head %d after a refused append", h)
	}
}

// unavailableStore is a log whose reads fail as a follower's do while its
// copy cannot be restored.
type unavailableStore struct{ eventlog.Store }

func (unavailableStore) ReadFeed(context.Context, eventlog.FeedQuery) ([]eventlog.Record, error) {
	return nil, fmt.Errorf("%w: the local copy could not be restored", eventlog.ErrUnavailable)
}

func TestReadsOfAnUnavailableLogAnswer503(t *testing.T) {
	e := newEnv(t)
	reg := handler.NewRegistry()
	bankapi.Register(reg)
	p := handler.NewProject(reg, unavailableStore{e.Store}, e.Runner, nil)
	resp := serve(context.Background(), p, http.MethodGet, "/events", nil, "")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(resp.Body, `"replica_unavailable"`) {
		t.Fatalf("GET /events over an unavailable log: %d %s", resp.StatusCode, resp.Body)
	}
}
