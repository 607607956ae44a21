package functions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	dto "github.com/prometheus/client_model/go"

	"github.com/eventcore-go/eventcore/handler"
	"github.com/eventcore-go/eventcore/metrics/metricstest"
)

// The grouping key of the functions' pushes: the job is the function's name
// (AWS_LAMBDA_FUNCTION_NAME, set explicitly: the emulator's default,
// test_function, is the same for both functions), the instance its log
// stream (AWS_LAMBDA_LOG_STREAM_NAME, $LATEST for every emulator unless
// set). The names have the shape Lambda gives them, with a "/" the
// gateway's URL needs encoded.
const (
	executeJob     = "eventcore-execute"
	projectJob     = "eventcore-project"
	executeStreamA = "2026/01/02/[$LATEST]0a1b2c3d4e5f4a5b8c9d0e1f2a3b4c5d"
	executeStreamB = "2026/01/02/[$LATEST]f5e4d3c2b1a04f9e8d7c6b5a49382716"
	projectStream  = "2026/01/02/[$LATEST]77aa88bb99cc4ddd8eee9fff00112233"
)

// lambdaEnv is the environment of a function over the databases in dir
// that pushes to gateway (none when empty) under job and instance.
func lambdaEnv(dir, gateway, job, instance string, extra ...string) map[string]string {
	env := map[string]string{
		"EVENTCORE_ALLOW_EPHEMERAL":  "true",
		"EVENTCORE_DB":               filepath.Join(dir, "events.db"),
		"EVENTCORE_READ_DB":          filepath.Join(dir, "projections.db"),
		"AWS_LAMBDA_FUNCTION_NAME":   job,
		"AWS_LAMBDA_LOG_STREAM_NAME": instance,
	}
	if gateway != "" {
		env["EVENTCORE_PUSHGATEWAY_URL"] = gateway
	}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return env
}

// gatewayFamilies reads what the gateway holds.
func gatewayFamilies(t testing.TB, gateway string) map[string]*dto.MetricFamily {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	families, err := metricstest.Families(ctx, gateway)
	if err != nil {
		t.Fatal(err)
	}
	return families
}

// seriesOf returns the families that hold at least one series with all
// of labels.
func seriesOf(families map[string]*dto.MetricFamily, labels map[string]string) []string {
	var names []string
	for name, f := range families {
		for _, m := range f.GetMetric() {
			if matches(m, labels) {
				names = append(names, name)
				break
			}
		}
	}
	slices.Sort(names)
	return names
}

func matches(m *dto.Metric, labels map[string]string) bool {
	have := map[string]string{}
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range labels {
		if have[k] != v {
			return false
		}
	}
	return true
}

// sample is one expected series: its family, the labels besides job and
// instance, and its value (the sample count for a histogram).
type sample struct {
	name   string
	labels map[string]string
	want   float64
}

func l(kv ...string) map[string]string {
	out := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// wantSeries checks samples in the group job, instance.
func wantSeries(t *testing.T, families map[string]*dto.MetricFamily, job, instance string, samples []sample) {
	t.Helper()
	for _, s := range samples {
		labels := l("job", job, "instance", instance)
		for k, v := range s.labels {
			labels[k] = v
		}
		got, ok := metricstest.Value(families, s.name, labels)
		if !ok || got != s.want {
			t.Errorf("%s%v = %v (found %v), want %v", s.name, labels, got, ok, s.want)
		}
	}
}

// command runs an HTTP API command and returns its answer and the events it
// recorded.
func command(t *testing.T, f *function, name, body string, status int) (events.APIGatewayV2HTTPResponse, int) {
	t.Helper()
	resp := f.do(t, post(name, body))
	if resp.StatusCode != status {
		t.Fatalf("%s %s answered %d, want %d: %s", name, body, resp.StatusCode, status, resp.Body)
	}
	if status != http.StatusOK {
		return resp, 0
	}
	var res handler.CommandResponse
	if err := json.Unmarshal([]byte(resp.Body), &res); err != nil {
		t.Fatalf("%s answered %s: %v", name, resp.Body, err)
	}
	return resp, len(res.Events)
}

// TestLambdaMetricsInPushgateway runs commands through two instances of the
// execute function and a scheduled run and a read through the project
// function, each under its own emulator and all pushing to one real
// Pushgateway, and checks what the gateway holds, group by group. Stopping
// an instance (SIGTERM to its emulator, which terminates the bootstrap the
// way Lambda does when an extension is registered, here the one
// lambda.WithEnableSIGTERM registers) deletes its group.
func TestLambdaMetricsInPushgateway(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	gateway := metricstest.StartPushgateway(t)
	data := t.TempDir()
	interval := "EVENTCORE_PUSH_INTERVAL"
	execA := startFunction(t, "execute", "execute A", lambdaEnv(data, gateway, executeJob, executeStreamA, interval, pushInterval.String()))

	writtenA := 0
	for _, c := range []struct {
		name, body string
		status     int
		code       string
	}{
		{"open-account", `{"account":"alice","owner":"Alice"}`, http.StatusOK, ""},
		{"open-account", `{"account":"bob","owner":"Bob"}`, http.StatusOK, ""},
		{"deposit", `{"account":"alice","amount":1000}`, http.StatusOK, ""},
		{"deposit", `{"account":"bob","amount":50}`, http.StatusOK, ""},
		{"transfer", `{"from":"alice","to":"bob","amount":100}`, http.StatusOK, ""},
		{"withdraw", `{"account":"bob","amount":1000}`, http.StatusUnprocessableEntity, "insufficient_funds"},
		{"deposit", `{"account":"alice","amount":1.5}`, http.StatusBadRequest, "invalid_request"},
	} {
		resp, n := command(t, execA, c.name, c.body, c.status)
		if c.code != "" {
			wantError(t, resp, c.status, c.code)
		}
		writtenA += n
	}
	if writtenA != 6 {
		t.Fatalf("the commands recorded %d events, want 6 (2 opens, 2 deposits, a transfer's debit and credit)", writtenA)
	}

	execB := startFunction(t, "execute", "execute B", lambdaEnv(data, gateway, executeJob, executeStreamB, interval, pushInterval.String()))
	resp := execB.do(t, post("deposit", `{"account":"alice","amount":5}`))
	head := lastPosition(t, decodeOK[handler.CommandResponse](t, resp))
	if head != 7 {
		t.Fatalf("head after instance B's deposit is %d, want 7", head)
	}

	project := startFunction(t, "project", "project", lambdaEnv(data, gateway, projectJob, projectStream, interval, pushInterval.String()))
	scheduled := scheduledEvent()
	var report scheduleReport
	if out := project.invokeOK(t, scheduled); json.Unmarshal(out, &report) != nil || len(report.Projections) != 2 {
		t.Fatalf("scheduled run answered %s", out)
	}
	b := decodeOK[balance](t, project.do(t, get(fmt.Sprintf("/accounts/alice?min_position=%d", head))))
	if b.Balance != 905 {
		t.Fatalf("alice: %+v, want a balance of 905", b)
	}

	// An invocation pushes only when the interval has passed since its
	// instance's last push: the counts of the invocations since are not
	// lost, the next push carries them. Once the interval has passed, one
	// more invocation of each instance, which counts nothing, pushes them.
	time.Sleep(pushInterval + 50*time.Millisecond)
	for _, fn := range []*function{execA, execB} {
		if resp := fn.do(t, post("no-such-command", `{}`)); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%s: an unknown command answered %d %s", fn.name, resp.StatusCode, resp.Body)
		}
	}
	if resp := project.do(t, get("/accounts/alice")); resp.StatusCode != http.StatusOK {
		t.Fatalf("project: %d %s", resp.StatusCode, resp.Body)
	}
	families := gatewayFamilies(t, gateway)
	t.Run("execute instance A", func(t *testing.T) {
		wantSeries(t, families, executeJob, executeStreamA, []sample{
			{"eventcore_commands_total", l("command", "open-account", "outcome", "ok"), 2},
			{"eventcore_commands_total", l("command", "deposit", "outcome", "ok"), 2},
			{"eventcore_commands_total", l("command", "transfer", "outcome", "ok"), 1},
			{"eventcore_commands_total", l("command", "withdraw", "outcome", "rejected"), 1},
			{"eventcore_commands_total", l("command", "deposit", "outcome", "rejected"), 1},
			{"eventcore_events_written_total", nil, 6},
			{"eventcore_command_duration_seconds", l("command", "open-account"), 2},
			{"eventcore_command_duration_seconds", l("command", "deposit"), 3},
			{"eventcore_command_duration_seconds", l("command", "transfer"), 1},
			{"eventcore_command_duration_seconds", l("command", "withdraw"), 1},
			// The invalid deposit never reached the executor: no attempt.
			{"eventcore_command_attempts", l("command", "deposit"), 2},
			// One append per command that recorded events; a rejection
			// appends nothing.
			{"eventcore_store_operation_duration_seconds", l("operation", "append"), 5},
			{"eventcore_version_conflicts_total", nil, 0},
			{"eventcore_command_retries_total", nil, 0},
			{"eventcore_active_streams", nil, 2},
		})
		for _, outcome := range []string{"conflict", "error"} {
			if n := len(seriesOf(families, l("job", executeJob, "outcome", outcome))); n != 0 {
				t.Errorf("%d series with outcome %s", n, outcome)
			}
		}
		group := l("job", executeJob, "instance", executeStreamA)
		for _, name := range []string{
			"eventcore_cache_hits_total", "eventcore_cache_partial_hits_total", "eventcore_cache_caught_up_events_total",
			"eventcore_cache_misses_total", "eventcore_cache_evictions_total", "eventcore_cache_bytes",
		} {
			if _, ok := metricstest.Value(families, name, group); !ok {
				t.Errorf("%s%v is missing", name, group)
			}
		}
		hits, _ := metricstest.Value(families, "eventcore_cache_hits_total", group)
		partial, _ := metricstest.Value(families, "eventcore_cache_partial_hits_total", group)
		misses, _ := metricstest.Value(families, "eventcore_cache_misses_total", group)
		if hits+partial+misses == 0 {
			t.Error("the cache counted no hit, partial hit or miss over 6 executed commands")
		}
		if size, ok := metricstest.Value(families, "eventcore_database_size_bytes", l("job", executeJob, "instance", executeStreamA, "database", "events")); !ok || size <= 0 {
			t.Errorf("events database size %v (found %v)", size, ok)
		}
		// The execute function runs no projection: it must not push lag
		// figures that would go stale in the gateway.
		for _, name := range []string{"eventcore_projection_lag_events", "eventcore_projection_checkpoint_position", "eventcore_projection_head_position"} {
			if got := metricstest.Instances(families, name, executeJob); len(got) != 0 {
				t.Errorf("the execute function pushed %s from %v", name, got)
			}
		}
	})
	t.Run("execute instance B", func(t *testing.T) {
		wantSeries(t, families, executeJob, executeStreamB, []sample{
			{"eventcore_commands_total", l("command", "deposit", "outcome", "ok"), 1},
			{"eventcore_events_written_total", nil, 1},
			{"eventcore_command_duration_seconds", l("command", "deposit"), 1},
			{"eventcore_store_operation_duration_seconds", l("operation", "append"), 1},
		})
		got := metricstest.Instances(families, "eventcore_commands_total", executeJob)
		slices.Sort(got)
		if want := []string{executeStreamA, executeStreamB}; !slices.Equal(got, want) {
			t.Errorf("execute groups %q, want %q", got, want)
		}
	})
	t.Run("project", func(t *testing.T) {
		wantSeries(t, families, projectJob, projectStream, []sample{
			// Nothing read the projections before the scheduled run.
			{"eventcore_projection_events_applied_total", l("projection", "balances"), float64(head)},
			{"eventcore_projection_events_applied_total", l("projection", "history"), float64(head)},
			{"eventcore_projection_checkpoint_position", l("projection", "balances"), float64(head)},
			{"eventcore_projection_checkpoint_position", l("projection", "history"), float64(head)},
			{"eventcore_projection_head_position", nil, float64(head)},
			{"eventcore_projection_lag_events", l("projection", "balances"), 0},
			{"eventcore_projection_lag_events", l("projection", "history"), 0},
			{"eventcore_projection_dead_letters", l("projection", "balances"), 0},
			{"eventcore_projection_dead_letters", l("projection", "history"), 0},
		})
		if n, ok := metricstest.Value(families, "eventcore_store_operation_duration_seconds",
			l("job", projectJob, "instance", projectStream, "operation", "read_feed")); !ok || n < 1 {
			t.Errorf("project read the feed %v times (found %v)", n, ok)
		}
		if got := metricstest.Instances(families, "eventcore_commands_total", projectJob); len(got) != 0 {
			t.Errorf("the project function pushed command counts: %q", got)
		}
		if got := metricstest.Instances(families, "eventcore_projection_events_applied_total", projectJob); !slices.Equal(got, []string{projectStream}) {
			t.Errorf("project groups %q", got)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("stopped instance deletes its group", func(t *testing.T) {
		if !execB.stop() {
			t.Fatal("the emulator of instance B did not exit within 5 s of SIGTERM")
		}
		if strings.Contains(execB.out.String(), "metrics delete failed") {
			t.Fatalf("instance B could not delete its group:\n%s", execB.out)
		}
		families := gatewayFamilies(t, gateway)
		if left := seriesOf(families, l("job", executeJob, "instance", executeStreamB)); len(left) != 0 {
			t.Fatalf("after instance B stopped the gateway still holds its series of %q", left)
		}
		if got := metricstest.Instances(families, "eventcore_commands_total", executeJob); !slices.Equal(got, []string{executeStreamA}) {
			t.Errorf("after instance B stopped: execute groups %q, want only A's", got)
		}
		if got, ok := metricstest.Value(families, "eventcore_events_written_total", l("job", executeJob, "instance", executeStreamA)); !ok || got != 6 {
			t.Errorf("instance A's events written = %v (found %v) after B stopped, want 6", got, ok)
		}
	})
}

// pushInterval is EVENTCORE_PUSH_INTERVAL in the tests that read the
// gateway: short, so that they wait little for it.
const pushInterval = 300 * time.Millisecond

// TestLambdaPushToUnresponsiveGateway points the execute function at a
// gateway that accepts connections and never answers, with a push after
// every invocation (EVENTCORE_PUSH_INTERVAL=0): the first push waits for
// its 100ms timeout and fails, and the invocations after it, within the
// backoff, do not try again: they answer without waiting for the gateway,
// and the episode is logged once.
func TestLambdaPushToUnresponsiveGateway(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	hole, attempts := metricstest.CountingBlackHole(t)
	fn := startFunction(t, "execute", "execute (unresponsive gateway)",
		lambdaEnv(t.TempDir(), hole, executeJob, executeStreamA, "EVENTCORE_PUSH_TIMEOUT", "100ms", "EVENTCORE_PUSH_INTERVAL", "0"))
	command(t, fn, "open-account", `{"account":"alice","owner":"Alice"}`, http.StatusOK)
	const deposits = 20
	start := time.Now()
	for range deposits {
		if _, n := command(t, fn, "deposit", `{"account":"alice","amount":10}`, http.StatusOK); n != 1 {
			t.Fatalf("the deposit recorded %d events", n)
		}
	}
	took := time.Since(start)
	// A push on every invocation would make 21 attempts, each waiting out
	// its 100ms timeout. The backoff (1 s, doubling) allows one for the
	// first invocation and one each time it runs out: a handful however
	// slow the machine is.
	bound := int64(2 + math.Ceil(math.Log2(1+took.Seconds())))
	if n := attempts(); n > bound {
		t.Errorf("%d push attempts for %d invocations in %v, want at most %d: they did not back off", n, deposits+1, took, bound)
	}
	t.Logf("%d deposits with an unresponsive gateway: %v, %d push attempts", deposits, took, attempts())
	var failures []string
	for _, line := range strings.Split(fn.out.String(), "\n") {
		if strings.Contains(line, "metrics push failed") {
			failures = append(failures, line)
		}
	}
	if len(failures) != 1 {
		t.Fatalf("%d push failures logged, want one for the episode:\n%s", len(failures), fn.out)
	}
	if !strings.Contains(failures[0], "deadline exceeded") || !strings.Contains(failures[0], hole) {
		t.Errorf("the push failure does not name the gateway and the deadline: %s", failures[0])
	}
}

// TestLambdaPushEndsBeforeTheInvocationDeadline gives the project function
// a push timeout longer than what is left of a 2 s invocation once a read
// waiting for ?min_position gives up (half a second), and a gateway that
// never answers: the push must stop before the deadline, so that the
// function still answers 503 projection_behind instead of timing out.
func TestLambdaPushEndsBeforeTheInvocationDeadline(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	hole := metricstest.BlackHole(t)
	fn := startFunction(t, "project", "project (2 s timeout, 5 s push timeout)",
		lambdaEnv(t.TempDir(), hole, projectJob, projectStream, "EVENTCORE_PUSH_TIMEOUT", "5s", "AWS_LAMBDA_FUNCTION_TIMEOUT", "2"))
	// A machine too loaded to answer within the margins may time out once,
	// as in TestLambdaEndToEnd's "projection behind".
	var resp events.APIGatewayV2HTTPResponse
	for attempt := 1; ; attempt++ {
		start := time.Now()
		status, out := fn.invoke(t, get("/accounts/alice?min_position=1000000").event())
		elapsed := time.Since(start)
		if status != http.StatusOK {
			t.Fatalf("invoke answered %d after %v: %s", status, elapsed, out)
		}
		if err := json.Unmarshal(out, &resp); err == nil && resp.StatusCode != 0 {
			break
		}
		if attempt == 2 || !strings.HasPrefix(string(out), "Task timed out") {
			t.Fatalf("after %v the emulator answered %s, not the function's 503", elapsed, out)
		}
		t.Logf("attempt %d: after %v the emulator answered %s; trying again", attempt, elapsed, out)
	}
	wantError(t, resp, http.StatusServiceUnavailable, "projection_behind")
	// The emulator relays the function's log through a pipe: the line may
	// reach its output a little after the answer.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(fn.out.String(), "metrics push failed"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the push cut short at the deadline was not logged:\n%s", fn.out)
		}
	}
}

// BenchmarkInvokeWithPush measures deposits invoked one at a time through
// the emulator in three instances of the execute function, interleaved so
// that all three see the same machine: without a gateway, with a live
// one, and with one that accepts connections and never answers, each
// pushing at its default interval. It reports each one's p50 and p99 in
// milliseconds and their ratios to the instance without a gateway.
func BenchmarkInvokeWithPush(b *testing.B) {
	if msg := missingBinaries(); msg != "" {
		b.Skip(msg)
	}
	cases := []struct {
		name    string
		gateway func(testing.TB) string
	}{{"none", nil}, {"live", metricstest.StartPushgateway}, {"dead", metricstest.BlackHole}}
	fns := map[string]*function{}
	for _, c := range cases {
		url := ""
		if c.gateway != nil {
			url = c.gateway(b)
		}
		fn := startFunction(b, "execute", "execute ("+c.name+" gateway)", lambdaEnv(b.TempDir(), url, "bench", "bench-"+c.name))
		if resp := fn.do(b, post("open-account", `{"account":"alice","owner":"Alice"}`)); resp.StatusCode != http.StatusOK {
			b.Fatalf("open-account answered %d: %s", resp.StatusCode, resp.Body)
		}
		fns[c.name] = fn
	}
	deposit := post("deposit", `{"account":"alice","amount":1}`).event()
	lat := map[string][]time.Duration{}
	for b.Loop() {
		for _, c := range cases {
			start := time.Now()
			if out := fns[c.name].invokeOK(b, deposit); !strings.Contains(string(out), `"statusCode":200`) {
				b.Fatalf("deposit answered %s", out)
			}
			lat[c.name] = append(lat[c.name], time.Since(start))
		}
	}
	b.StopTimer()
	quantile := func(d []time.Duration, q float64) float64 {
		d = slices.Clone(d)
		slices.Sort(d)
		return float64(d[min(len(d)-1, int(q*float64(len(d))))].Microseconds()) / 1000
	}
	for _, c := range cases {
		p50, p99 := quantile(lat[c.name], 0.5), quantile(lat[c.name], 0.99)
		b.ReportMetric(p50, c.name+"-p50-ms")
		b.ReportMetric(p99, c.name+"-p99-ms")
		if c.name != "none" {
			b.ReportMetric(p50/quantile(lat["none"], 0.5), c.name+"/none-p50")
			b.ReportMetric(p99/quantile(lat["none"], 0.99), c.name+"/none-p99")
		}
	}
	b.ReportMetric(0, "ns/op")
}

// TestManagedInstancesPushOnAnInterval runs the execute function in the
// managed-instances shape: there one background goroutine pushes every
// EVENTCORE_PUSH_INTERVAL, so the gateway reaches the exact counts an
// interval after the last command without any further invocation, and
// SIGTERM deletes the instance's group.
func TestManagedInstancesPushOnAnInterval(t *testing.T) {
	requireManaged(t)
	t.Parallel()
	gateway := metricstest.StartPushgateway(t)
	f := startManaged(t, "execute", "execute (managed, pushing)", 4,
		lambdaEnv(sharedDir(t), gateway, executeJob, executeStreamA, "EVENTCORE_PUSH_INTERVAL", pushInterval.String()))
	command(t, f, "open-account", `{"account":"alice","owner":"Alice"}`, http.StatusOK)
	command(t, f, "deposit", `{"account":"alice","amount":10}`, http.StatusOK)
	command(t, f, "deposit", `{"account":"alice","amount":5}`, http.StatusOK)
	want := []sample{
		{"eventcore_commands_total", l("command", "open-account", "outcome", "ok"), 1},
		{"eventcore_commands_total", l("command", "deposit", "outcome", "ok"), 2},
		{"eventcore_events_written_total", nil, 3},
		{"eventcore_metrics_push_failures_total", nil, 0},
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		families := gatewayFamilies(t, gateway)
		reached := true
		for _, s := range want {
			labels := l("job", executeJob, "instance", executeStreamA)
			for k, v := range s.labels {
				labels[k] = v
			}
			if got, ok := metricstest.Value(families, s.name, labels); !ok || got != s.want {
				reached = false
			}
		}
		if reached {
			break
		}
		if time.Now().After(deadline) {
			wantSeries(t, families, executeJob, executeStreamA, want)
			t.Fatalf("the gateway did not reach the counts within %s of the last command", 10*pushInterval)
		}
		time.Sleep(pushInterval / 3)
	}
	if !f.stop() {
		t.Fatal("the emulator did not stop within 5 s of SIGTERM")
	}
	if left := seriesOf(gatewayFamilies(t, gateway), l("job", executeJob, "instance", executeStreamA)); len(left) != 0 {
		t.Fatalf("after the instance stopped the gateway still holds its series %q", left)
	}
}
