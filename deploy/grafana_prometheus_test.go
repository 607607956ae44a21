package deploy_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image/color"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/metrics"
	"github.com/eventcore-go/eventcore/metrics/metricstest"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var updateBoardPicture = flag.Bool("update-board-picture", false, "write "+boardPicture+" from the board's queries against a real Prometheus")

// boardPicture is where -update-board-picture draws the board.
const boardPicture = "../docs/grafana-board.png"

// boardRateInterval stands for Grafana's $__rate_interval against a
// Prometheus that scrapes every second: four scrapes and then one more.
const boardRateInterval = "5s"

// promSeries is one series of a range query's answer.
type promSeries struct {
	Metric map[string]string `json:"metric"`
	Values [][2]any          `json:"values"` // [unix seconds, "value"]
}

// points returns the series' samples as (seconds since from, value).
func (s promSeries) points(from time.Time) (xs, ys []float64) {
	for _, v := range s.Values {
		at, _ := v[0].(float64)
		text, _ := v[1].(string)
		y, err := strconv.ParseFloat(text, 64)
		if err != nil {
			continue
		}
		xs = append(xs, at-float64(from.UnixNano())/1e9)
		ys = append(ys, y)
	}
	return xs, ys
}

// queryRange asks Prometheus for expr from start to end, a sample a
// second.
func queryRange(ctx context.Context, base, expr string, start, end time.Time) ([]promSeries, error) {
	q := url.Values{
		"query": {expr},
		"start": {strconv.FormatFloat(float64(start.UnixNano())/1e9, 'f', 3, 64)},
		"end":   {strconv.FormatFloat(float64(end.UnixNano())/1e9, 'f', 3, 64)},
		"step":  {"1"},
	}
	var data struct {
		Result []promSeries `json:"result"`
	}
	err := promGet(ctx, base+"/api/v1/query_range?"+q.Encode(), &data)
	return data.Result, err
}

// labelValues asks Prometheus for the values of label on the series
// selector selects, as Grafana's label_values(selector, label) does.
func labelValues(ctx context.Context, base, selector, label string) ([]string, error) {
	var values []string
	err := promGet(ctx, base+"/api/v1/label/"+url.PathEscape(label)+"/values?"+url.Values{"match[]": {selector}}.Encode(), &values)
	return values, err
}

// promGet GETs a Prometheus HTTP API URL and decodes its answer's data
// into data; an answer whose status is not success is an error with
// Prometheus's message.
func promGet(ctx context.Context, target string, data any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	var answer struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		return fmt.Errorf("%s: %w", resp.Status, err)
	}
	if answer.Status != "success" {
		return fmt.Errorf("%s: %s", resp.Status, answer.Error)
	}
	return json.Unmarshal(answer.Data, data)
}

// boardVariables resolves the board's template variables with everything
// selected, as Grafana does: each label_values query in order (a later one
// may use an earlier one), then the variable's allValue, or else a regex
// of every value found. It also returns the values of each variable.
func boardVariables(t *testing.T, ctx context.Context, prom string) (*strings.Replacer, map[string][]string) {
	t.Helper()
	variables := boardVariableDefs(t)
	pairs := []string{"$__rate_interval", boardRateInterval, "${__rate_interval}", boardRateInterval}
	found := map[string][]string{}
	for _, v := range variables {
		m := labelValuesQuery.FindStringSubmatch(v.Query.Query)
		if m == nil {
			t.Fatalf("variable %s: query %q is not label_values(selector, label)", v.Name, v.Query.Query)
		}
		values, err := labelValues(ctx, prom, strings.NewReplacer(pairs...).Replace(m[1]), m[2])
		if err != nil || len(values) == 0 {
			t.Fatalf("variable %s: %q found %v, %v", v.Name, v.Query.Query, values, err)
		}
		found[v.Name] = values
		all := "(" + strings.Join(values, "|") + ")"
		if v.AllValue != nil {
			all = *v.AllValue
		}
		pairs = append(pairs, "$"+v.Name, all, "${"+v.Name+"}", all)
	}
	return strings.NewReplacer(pairs...), found
}

// TestGrafanaBoardAgainstPrometheus runs the board's queries as Grafana
// would, against a real Prometheus that scrapes a real Pushgateway to
// which a real instance pushes while it serves commands: every panel's
// every query answers at least one series with a number in it. Parsing
// (TestGrafanaBoardParses) and series names (TestGrafanaBoardNamesExportedSeries)
// cannot show that a query's labels, aggregations and functions fit
// together into something to draw.
//
// With -update-board-picture it also draws the panels, as the queries
// answered, at their places on the board, into docs/grafana-board.png.
func TestGrafanaBoardAgainstPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a Prometheus server for several seconds")
	}
	gateway := metricstest.StartPushgateway(t)
	prom := metricstest.StartPrometheus(t, gateway)
	a := openInstance(t)
	pusher, err := metrics.NewPusher(a.Metrics, gateway, "execute", "board-test", 2*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	command := func(name, body string) int {
		rec := httptest.NewRecorder()
		a.Execute.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/commands/"+name, strings.NewReader(body)))
		return rec.Code
	}
	const accounts = 4
	for i := range accounts {
		for _, c := range [][2]string{
			{"open-account", fmt.Sprintf(`{"account":"b%d","owner":"B"}`, i)},
			{"deposit", fmt.Sprintf(`{"account":"b%d","amount":1000}`, i)},
		} {
			if code := command(c[0], c[1]); code != http.StatusOK {
				t.Fatalf("%s: %d", c[0], code)
			}
		}
	}

	// Eight clients move money between four accounts for a while, so that
	// commands wait for admission and some are refused; the instance
	// pushes twice a second and its projections catch up once a second.
	began := time.Now()
	const load = 8 * time.Second
	var wg sync.WaitGroup
	for c := range 8 {
		wg.Go(func() {
			for i := 0; time.Since(began) < load; i++ {
				from, to := (c+i)%accounts, (c+i+1)%accounts
				amount := 1 + (c*7+i)%40
				if i%25 == 0 {
					amount = 1_000_000 // refused: insufficient funds
				}
				command("transfer", fmt.Sprintf(`{"from":"b%d","to":"b%d","amount":%d}`, from, to, amount))
			}
		})
	}
	for tick := 0; time.Since(began) < load+2*time.Second; tick++ {
		if err := pusher.Push(ctx); err != nil {
			t.Fatalf("push: %v", err)
		}
		if tick%2 == 0 {
			if _, err := a.Project.CatchUp(ctx); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	wg.Wait()
	if err := pusher.Push(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the last push is scraped
	end := time.Now()

	vars, values := boardVariables(t, ctx, prom)
	// The board's function variable lists what instances push, not the
	// gateway's own series (which carry job="pushgateway").
	if !slices.Equal(values["job"], []string{"execute"}) {
		t.Errorf("the function variable lists %v, want the one pushed job [execute]", values["job"])
	}
	panels := boardPanels(t)
	queries := 0
	for i, p := range panels {
		for j, tg := range p.Targets {
			queries++
			series, err := queryRange(ctx, prom, vars.Replace(tg.Expr), began, end)
			if err != nil {
				t.Errorf("panel %q target %s: %v\n%s", p.Title, tg.RefID, err, vars.Replace(tg.Expr))
				continue
			}
			panels[i].Targets[j].answer = series
			numbers := 0
			for _, s := range series {
				_, ys := s.points(began)
				for _, y := range ys {
					if !math.IsNaN(y) && !math.IsInf(y, 0) {
						numbers++
					}
				}
			}
			if numbers == 0 {
				t.Errorf("panel %q target %s: %d series and no number to draw\n%s", p.Title, tg.RefID, len(series), vars.Replace(tg.Expr))
			}
		}
	}
	if queries < 15 {
		t.Fatalf("%d queries; the board lost its panels", queries)
	}
	if *updateBoardPicture {
		if err := drawBoard(boardPicture, panels, began); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", boardPicture)
	}
}

// drawBoard draws panels at their grid places into a PNG at path: a row
// as its title, any other panel as a chart of its targets' series, in
// seconds since from.
func drawBoard(path string, panels []boardPanel, from time.Time) error {
	const unitW, unitH = vg.Length(40), vg.Length(22)
	rows := 0
	for _, p := range panels {
		rows = max(rows, p.GridPos.Y+p.GridPos.H)
	}
	width, height := 24*unitW, vg.Length(rows)*unitH
	img := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseBackgroundColor(color.White))
	dc := draw.New(img)
	title := text.Style{Color: color.Black, Font: font.From(plot.DefaultFont, 14), Handler: plot.DefaultTextHandler}
	for _, p := range panels {
		left, top := vg.Length(p.GridPos.X)*unitW, height-vg.Length(p.GridPos.Y)*unitH
		right, bottom := left+vg.Length(p.GridPos.W)*unitW, top-vg.Length(p.GridPos.H)*unitH
		if p.Type == "row" {
			dc.FillText(title, vg.Point{X: left + 6, Y: bottom + 4}, p.Title)
			continue
		}
		chart, err := panelChart(p, from)
		if err != nil {
			return fmt.Errorf("panel %q: %w", p.Title, err)
		}
		chart.Draw(draw.Crop(dc, left+4, right-width-4, bottom+4, top-height-4))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// panelChart is one panel's chart: a line per series of every target,
// named by the labels that tell the series apart.
func panelChart(p boardPanel, from time.Time) (*plot.Plot, error) {
	chart := plot.New()
	chart.Title.Text = p.Title
	chart.X.Label.Text = "seconds"
	chart.Legend.Top, chart.Legend.Left = true, true
	chart.Legend.TextStyle.Font.Size = 8
	chart.Add(plotter.NewGrid())
	n := 0
	for _, tg := range p.Targets {
		for _, s := range tg.answer {
			xs, ys := s.points(from)
			var line plotter.XYs
			for i := range xs {
				if !math.IsNaN(ys[i]) && !math.IsInf(ys[i], 0) {
					line = append(line, plotter.XY{X: xs[i], Y: ys[i]})
				}
			}
			if len(line) == 0 {
				continue
			}
			l, err := plotter.NewLine(line)
			if err != nil {
				return nil, err
			}
			l.Color = plotutil.Color(n)
			n++
			chart.Add(l)
			chart.Legend.Add(seriesName(tg, s), l)
		}
	}
	return chart, nil
}

// seriesName names a series as Grafana does: the target's legend format
// with {{label}} replaced by the series' labels, or the series' labels
// when there is none.
func seriesName(tg boardTarget, s promSeries) string {
	if tg.Legend != "" {
		return strings.TrimSpace(legendLabel.ReplaceAllStringFunc(tg.Legend, func(m string) string {
			return s.Metric[legendLabel.FindStringSubmatch(m)[1]]
		}))
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(s.Metric)) {
		parts = append(parts, k+"="+s.Metric[k])
	}
	if len(parts) == 0 {
		return tg.RefID
	}
	return strings.Join(parts, " ")
}

var legendLabel = regexp.MustCompile(`\{\{\s*(\w+)\s*\}\}`)
