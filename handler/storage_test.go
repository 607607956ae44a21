package handler_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/examples/bank/bankapi"
	"github.com/eventcore-go/eventcore/handler"
)

// failingAppends is a store whose appends fail with err.
type failingAppends struct {
	eventlog.Store
	err error
}

func (s failingAppends) Append(context.Context, eventlog.AppendRequest) (eventlog.AppendResult, error) {
	return eventlog.AppendResult{}, s.err
}

// A full disk answers 507 storage_full and an I/O error 503
// storage_unavailable, both with Retry-After, over HTTP and in a direct
// invocation's body.
func TestStorageErrorsAnswers(t *testing.T) {
	e := newEnv(t)
	e.mustCommand("open-account", `{"account":"alice","owner":"Alice"}`)
	for _, c := range []struct {
		err        error
		status     int
		code       string
		retryAfter string
	}{
		{fmt.Errorf("sqlite: append: %w: database or disk is full (13)", eventlog.ErrStorageFull), 507, "storage_full", "10"},
		{fmt.Errorf("sqlite: append: %w: disk I/O error (1034)", eventlog.ErrStorageUnavailable), 503, "storage_unavailable", "1"},
	} {
		reg := handler.NewRegistry()
		bankapi.Register(reg)
		x := handler.NewExecute(reg, failingAppends{Store: e.Store, err: c.err}, handler.ExecuteOptions{})
		rec := httptest.NewRecorder()
		x.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/commands/deposit", strings.NewReader(`{"account":"alice","amount":5}`)))
		if rec.Code != c.status || errorCode(t, rec.Body.String()) != c.code || rec.Header().Get("Retry-After") != c.retryAfter {
			t.Fatalf("%v: %d %s Retry-After %q; want %d %s Retry-After %s", c.err, rec.Code, rec.Body.String(), rec.Header().Get("Retry-After"), c.status, c.code, c.retryAfter)
		}
		status, body, _ := x.HandleDirect(context.Background(), handler.CommandRequest{Command: "deposit", Input: []byte(`{"account":"alice","amount":5}`)})
		if status != c.status || errorCode(t, string(body)) != c.code {
			t.Fatalf("direct: %d %s", status, body)
		}
	}
	// Other errors carry no Retry-After.
	rec := httptest.NewRecorder()
	e.Execute.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/commands/deposit", strings.NewReader(`{"account":"nobody","amount":5}`)))
	if rec.Code != 422 || rec.Header().Get("Retry-After") != "" {
		t.Fatalf("refusal: %d %s Retry-After %q", rec.Code, rec.Body.String(), rec.Header().Get("Retry-After"))
	}
}
