package app_test

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/eventcore-go/eventcore/app"
	"github.com/eventcore-go/eventcore/config"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/examples/bank/bankapi"
	"github.com/eventcore-go/eventcore/handler"
	"github.com/eventcore-go/eventcore/replica/replicatest"
)

func openRole(t testing.TB, role app.Role, env map[string]string) *app.App {
	t.Helper()
	cfg, err := config.Load(func(name string) string { return env[name] })
	if err != nil {
		t.Fatal(err)
	}
	reg := handler.NewRegistry()
	bankapi.Register(reg)
	a, err := app.OpenAs(context.Background(), role, cfg, reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func balance(t *testing.T, a *app.App, account string) (int, string) {
	t.Helper()
	resp := a.Project.HandleHTTP(context.Background(), events.APIGatewayV2HTTPRequest{
		Version: "2.0", RawPath: "/accounts/" + account,
		RequestContext: events.APIGatewayV2HTTPRequestContext{HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: http.MethodGet, Path: "/accounts/" + account}},
	})
	return resp.StatusCode, resp.Body
}

// The Litestream shape of the two functions: the execute role writes the
// log and syncs it; the project role follows the log's replica and keeps
// its own read models replicated, so a new project instance with an empty
// disk answers at once from the restored read models.
func TestProjectRoleFollowsTheLogReplica(t *testing.T) {
	s3 := replicatest.StartS3(t)
	ctx := context.Background()
	execDir, projDir := t.TempDir(), t.TempDir()
	execEnv := map[string]string{
		"EVENTCORE_DB": filepath.Join(execDir, "events.db"), "EVENTCORE_READ_DB": filepath.Join(execDir, "projections.db"),
		"EVENTCORE_REPLICA_URL": s3.URL("bank/events"),
	}
	projEnv := map[string]string{
		"EVENTCORE_DB": filepath.Join(projDir, "events.db"), "EVENTCORE_READ_DB": filepath.Join(projDir, "projections.db"),
		"EVENTCORE_REPLICA_URL": s3.URL("bank/events"), "EVENTCORE_READ_REPLICA_URL": s3.URL("bank/read-models"),
	}
	exec := openRole(t, app.RoleExecute, execEnv)
	defer func() { _ = exec.Close() }()
	proj := openRole(t, app.RoleProject, projEnv)
	run := func(command, input string) {
		t.Helper()
		var status int
		var body []byte
		_ = exec.Do(ctx, app.Request, func(ctx context.Context) error {
			status, body, _ = exec.Execute.HandleDirect(ctx, handler.CommandRequest{Command: command, Input: []byte(input)})
			return nil
		})
		if status != 200 {
			t.Fatalf("%s: %d %s", command, status, body)
		}
	}
	invokeProject := func(a *app.App) {
		t.Helper()
		if err := a.Do(ctx, app.Scheduled, func(ctx context.Context) error {
			_, err := a.Project.CatchUp(ctx)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	run("open-account", `{"account":"alice","owner":"Alice"}`)
	run("deposit", `{"account":"alice","amount":100}`)
	invokeProject(proj)
	if status, body := balance(t, proj, "alice"); status != 200 || !strings.Contains(body, `"balance":100`) {
		t.Fatalf("balance after the first catch-up: %d %s", status, body)
	}
	run("deposit", `{"account":"alice","amount":50}`)
	invokeProject(proj)
	if status, body := balance(t, proj, "alice"); status != 200 || !strings.Contains(body, `"balance":150`) {
		t.Fatalf("balance after the second catch-up: %d %s", status, body)
	}
	if err := exec.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	// Litestream's own series are gathered (pushed) with the instance's.
	families, err := exec.Metrics.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, f := range families {
		found[f.GetName()] = true
	}
	for _, name := range []string{"litestream_sync_count", "litestream_txid", "eventcore_commands_total"} {
		if !found[name] {
			t.Errorf("the execute role's metrics lack %s", name)
		}
	}
	if err := proj.Close(); err != nil {
		t.Fatal(err)
	}
	// A new project instance on an empty disk: the read models come back
	// from their replica before any catch-up.
	if err := os.RemoveAll(projDir); err != nil {
		t.Fatal(err)
	}
	fresh := openRole(t, app.RoleProject, projEnv)
	defer func() { _ = fresh.Close() }()
	if status, body := balance(t, fresh, "alice"); status != 200 || !strings.Contains(body, `"balance":150`) {
		t.Fatalf("balance on a fresh instance before catch-up: %d %s", status, body)
	}
	head, err := fresh.Store.Head(ctx)
	if err != nil || head != 3 {
		t.Fatalf("fresh instance's log head %d, %v; want 3", head, err)
	}
	// The project role never writes the log.
	if status, _, _ := fresh.Execute.HandleDirect(ctx, handler.CommandRequest{Command: "deposit", Input: []byte(`{"account":"alice","amount":1}`)}); status == 200 {
		t.Fatal("the project role recorded a command")
	}
}

// The read-model database checkpoints its WAL itself unless its own
// replica runs the checkpoints: the event log's replica has nothing to do
// with it.
func TestReadModelCheckpointsUnlessItsReplicaDoes(t *testing.T) {
	for _, c := range []struct {
		name        string
		readReplica bool
		want        int
	}{{"log replica only", false, sqlite.ReadModelCheckpointPages}, {"read-model replica", true, 0}} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			env := map[string]string{
				"EVENTCORE_DB": filepath.Join(dir, "events.db"), "EVENTCORE_READ_DB": filepath.Join(dir, "projections.db"),
				"EVENTCORE_REPLICA_URL": "file://" + filepath.Join(dir, "replica", "events"),
			}
			if c.readReplica {
				env["EVENTCORE_READ_REPLICA_URL"] = "file://" + filepath.Join(dir, "replica", "read-models")
			}
			a := openRole(t, app.RoleProject, env)
			defer func() { _ = a.Close() }()
			var pages int
			if err := a.ReadDB.QueryRow("PRAGMA wal_autocheckpoint").Scan(&pages); err != nil {
				t.Fatal(err)
			}
			if pages != c.want {
				t.Fatalf("the read-model database checkpoints every %d pages, want %d", pages, c.want)
			}
		})
	}
}
