package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/eventcore-go/eventcore/app"
	"github.com/eventcore-go/eventcore/config"
	"github.com/eventcore-go/eventcore/examples/bank/bankapi"
	"github.com/eventcore-go/eventcore/handler"
)

const grafanaBoard = "grafana/eventcore.json"

// boardQuery is one PromQL expression of the board and where it is.
type boardQuery struct {
	where, expr string
}

// boardQueries returns every expression of the board: the panels'
// targets (rows' nested panels too) and the selectors inside the template
// variables' label_values(...) queries.
func boardQueries(t *testing.T) []boardQuery {
	t.Helper()
	var out []boardQuery
	for _, p := range boardPanels(t) {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			out = append(out, boardQuery{fmt.Sprintf("panel %q target %s", p.Title, tg.RefID), tg.Expr})
		}
	}
	for _, v := range boardVariableDefs(t) {
		m := labelValuesQuery.FindStringSubmatch(v.Query.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, v.Query.Query)
			continue
		}
		out = append(out, boardQuery{"variable " + v.Name, m[1]})
	}
	return out
}

// labelValuesQuery is a variable's label_values(selector, label) query.
var labelValuesQuery = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

// boardVariable is one of the board's template variables.
type boardVariable struct {
	Name     string  `json:"name"`
	AllValue *string `json:"allValue"`
	Query    struct {
		Query string `json:"query"`
	} `json:"query"`
}

// boardVariableDefs returns the board's template variables, in order.
func boardVariableDefs(t *testing.T) []boardVariable {
	t.Helper()
	return readBoard(t).Templating.List
}

// board is the part of the board's JSON the tests read.
type board struct {
	Panels     []boardPanel `json:"panels"`
	Templating struct {
		List []boardVariable `json:"list"`
	} `json:"templating"`
}

// readBoard reads and decodes the board.
func readBoard(t *testing.T) board {
	t.Helper()
	b, err := os.ReadFile(grafanaBoard)
	if err != nil {
		t.Fatal(err)
	}
	var out board
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s: %v", grafanaBoard, err)
	}
	return out
}

// boardPanel is one panel of the board, rows included, with where it sits
// on Grafana's grid (24 columns wide, rows of 30 px).
type boardPanel struct {
	Title   string `json:"title"`
	Type    string `json:"type"`
	GridPos struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []boardTarget `json:"targets"`
	Panels  []boardPanel  `json:"panels"` // a collapsed row's panels
}

// boardTarget is one query of a panel, with what Prometheus answered.
type boardTarget struct {
	RefID  string `json:"refId"`
	Expr   string `json:"expr"`
	Legend string `json:"legendFormat"`
	answer []promSeries
}

// boardPanels returns the board's panels, a collapsed row's own panels
// after it.
func boardPanels(t *testing.T) []boardPanel {
	t.Helper()
	var out []boardPanel
	var walk func([]boardPanel)
	walk = func(ps []boardPanel) {
		for _, p := range ps {
			nested := p.Panels
			p.Panels = nil
			out = append(out, p)
			walk(nested)
		}
	}
	walk(readBoard(t).Panels)
	return out
}

// grafanaVariables are replaced by values PromQL accepts before parsing,
// as Grafana does before it sends a query.
var grafanaVariables = strings.NewReplacer(
	"$__rate_interval", "1m", "${__rate_interval}", "1m", "$__interval", "1m", "$__range", "1h",
	"$job", "execute|project", "${job}", "execute|project", "$instance", ".*", "${instance}", ".*",
)

// parseBoardQuery parses expr with Prometheus's own parser and returns the
// metric names it selects.
func parseBoardQuery(expr string) ([]string, error) {
	if strings.Contains(grafanaVariables.Replace(expr), "$") {
		return nil, fmt.Errorf("a Grafana variable the test does not know")
	}
	e, err := parser.ParseExpr(grafanaVariables.Replace(expr))
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		names = append(names, name)
		return nil
	})
	if len(names) == 0 {
		return nil, fmt.Errorf("selects no metric by name")
	}
	return names, nil
}

// TestGrafanaBoardParses: every expression of the board is PromQL that
// Prometheus parses, and selects its series by name.
func TestGrafanaBoardParses(t *testing.T) {
	qs := boardQueries(t)
	if len(qs) < 15 {
		t.Fatalf("%d queries; the board lost its panels", len(qs))
	}
	for _, q := range qs {
		if _, err := parseBoardQuery(q.expr); err != nil {
			t.Errorf("%s: %v\n%s", q.where, err, q.expr)
		}
	}
	// The check can fail.
	for _, bad := range []string{`sum by (job (rate(eventcore_commands_total[1m]))`, `rate(eventcore_commands_total[$__oops])`, `sum(1)`} {
		if _, err := parseBoardQuery(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// openInstance opens a real instance: the local runner's App on SQLite
// files in a temporary directory, closed when the test ends.
func openInstance(t *testing.T) *app.App {
	t.Helper()
	dir := t.TempDir()
	env := map[string]string{
		"EVENTCORE_DB": filepath.Join(dir, "events.db"), "EVENTCORE_READ_DB": filepath.Join(dir, "projections.db"),
		"EVENTCORE_SYNC": "normal",
	}
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	reg := handler.NewRegistry()
	bankapi.Register(reg)
	a, err := app.Open(context.Background(), cfg, reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// exportedSeries runs a real instance (openInstance), executes commands
// and catches the projections up, and returns the names of the series its
// registry exports, histograms' and summaries' _bucket, _sum and _count
// included.
func exportedSeries(t *testing.T) map[string]bool {
	t.Helper()
	a := openInstance(t)
	ctx := context.Background()
	for _, c := range []struct{ name, body string }{
		{"open-account", `{"account":"a","owner":"A"}`},
		{"deposit", `{"account":"a","amount":5}`},
		{"deposit", `{"account":"a","amount":5}`},
	} {
		rec := httptest.NewRecorder()
		a.Execute.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/commands/"+c.name, strings.NewReader(c.body)))
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", c.name, rec.Code, rec.Body.String())
		}
	}
	if _, err := a.Project.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	families, err := a.Metrics.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range families {
		n := f.GetName()
		names[n] = true
		switch f.GetType().String() {
		case "HISTOGRAM", "SUMMARY":
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[n+suffix] = true
			}
		}
	}
	return names
}

// TestGrafanaBoardNamesExportedSeries: every metric the board's
// expressions select is one that an instance's registry exports.
func TestGrafanaBoardNamesExportedSeries(t *testing.T) {
	exported := exportedSeries(t)
	for _, want := range []string{"eventcore_commands_total", "eventcore_projection_lag_events", "eventcore_command_duration_seconds_bucket"} {
		if !exported[want] {
			t.Fatalf("the instance exports no %s: the check would prove nothing", want)
		}
	}
	seen := 0
	for _, q := range boardQueries(t) {
		names, err := parseBoardQuery(q.expr)
		if err != nil {
			continue // TestGrafanaBoardParses reports it
		}
		for _, n := range names {
			seen++
			if !exported[n] {
				t.Errorf("%s selects %s, which the registry does not export", q.where, n)
			}
		}
	}
	if seen == 0 {
		t.Fatal("no metric selected")
	}
	if exported["eventcore_commands_totl"] {
		t.Fatal("a misspelt name is exported")
	}
}
