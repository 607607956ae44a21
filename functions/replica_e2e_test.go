package functions_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/benbjohnson/litestream"
	_ "github.com/benbjohnson/litestream/s3" // registers s3:// replicas

	"github.com/eventcore-go/eventcore/handler"
	"github.com/eventcore-go/eventcore/replica/replicatest"
)

// TestLambdaLitestreamMode runs both functions under the emulator in
// Litestream mode against an in-process S3: the execute function syncs
// each command before answering, answers 503 replica_unavailable while the
// bucket is down and the first result once it is back, runs maintenance
// on its schedule's payload, and a new instance with an empty /tmp
// restores the log and continues its positions; the project function
// answers reads from its copy of the log's replica.
func TestLambdaLitestreamMode(t *testing.T) {
	requireBinaries(t)
	s3 := replicatest.StartS3(t)
	envFor := func(dir string, extra map[string]string) map[string]string {
		env := map[string]string{
			"EVENTCORE_DB":              filepath.Join(dir, "events.db"),
			"EVENTCORE_READ_DB":         filepath.Join(dir, "projections.db"),
			"EVENTCORE_REPLICA_URL":     s3.URL("lambda/events"),
			"EVENTCORE_REPLICA_TIMEOUT": "1s",
		}
		for k, v := range replicatest.EnvVars() {
			env[k] = v
		}
		for k, v := range extra {
			env[k] = v
		}
		return env
	}
	execDir, projDir := t.TempDir(), t.TempDir()
	execute := startFunction(t, "execute", "execute", envFor(execDir, nil))
	for _, body := range []string{`{"account":"alice","owner":"Alice"}`, `{"account":"bob","owner":"Bob"}`} {
		decodeOK[handler.CommandResponse](t, execute.do(t, post("open-account", body)))
	}
	decodeOK[handler.CommandResponse](t, execute.do(t, post("deposit", `{"account":"alice","amount":100}`)))

	// The bucket goes down: the command is not acknowledged.
	s3.SetDown(true)
	wantError(t, execute.do(t, post("deposit", `{"account":"alice","amount":5}`, "Idempotency-Key", "dep-5")), http.StatusServiceUnavailable, "replica_unavailable")
	s3.SetDown(false)
	retried := decodeOK[handler.CommandResponse](t, execute.do(t, post("deposit", `{"account":"alice","amount":5}`, "Idempotency-Key", "dep-5")))
	if retried.Attempts != 0 || len(retried.Events) != 1 || retried.Events[0].Position != 4 {
		t.Fatalf("retry after the bucket came back answered %+v, want the first execution's event at position 4", retried)
	}

	// The schedule's payload runs Litestream's compaction and snapshots.
	if out := execute.invokeOK(t, map[string]bool{"maintenance": true}); !strings.Contains(string(out), `"maintained":true`) {
		t.Fatalf("maintenance answered %s", out)
	}

	project := startFunction(t, "project", "project", envFor(projDir, map[string]string{
		"EVENTCORE_READ_REPLICA_URL": s3.URL("lambda/read-models"),
	}))
	resp := project.do(t, get("/accounts/alice?min_position=4"))
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Body, `"balance":105`) {
		t.Fatalf("project read: %d %s", resp.StatusCode, resp.Body)
	}
	// The project function's schedule also compacts its read-model replica
	// (level-0 files into level 1).
	if n := ltxFiles(t, s3.URL("lambda/read-models"), 1); n != 0 {
		t.Fatalf("the read-model replica has %d level-1 files before any schedule ran", n)
	}
	project.invokeOK(t, scheduledEvent())
	if n := ltxFiles(t, s3.URL("lambda/read-models"), 1); n == 0 {
		t.Fatal("a scheduled project invocation did not compact the read-model replica")
	}

	// The execute instance goes away (SIGTERM: last sync, lease released)
	// and its /tmp with it; the next one restores and continues.
	if !execute.stop() {
		t.Fatal("the execute function did not stop on SIGTERM")
	}
	if err := os.RemoveAll(execDir); err != nil {
		t.Fatal(err)
	}
	execute = startFunction(t, "execute", "execute-2", envFor(execDir, nil))
	next := decodeOK[handler.CommandResponse](t, execute.do(t, post("deposit", `{"account":"alice","amount":1}`)))
	if next.Events[0].Position != 5 || next.Events[0].Version != 4 {
		t.Fatalf("first command of a new instance landed at position %d version %d, want 5/4", next.Events[0].Position, next.Events[0].Version)
	}
	// The project function catches up from the replica at its next call.
	resp = project.do(t, get("/accounts/alice?min_position=5"))
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Body, `"balance":106`) {
		t.Fatalf("project read after the new writer: %d %s", resp.StatusCode, resp.Body)
	}
}

// ltxFiles counts the replica's LTX files at level.
func ltxFiles(t *testing.T, url string, level int) int {
	t.Helper()
	client, err := litestream.NewReplicaClientFromURL(url)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	itr, err := client.LTXFiles(context.Background(), level, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = itr.Close() }()
	n := 0
	for itr.Next() {
		n++
	}
	if err := itr.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}
