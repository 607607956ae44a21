package dashboard

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/metrics"
)

func figureMap(v View) map[string]Figure {
	out := map[string]Figure{}
	for _, f := range v.Figures {
		out[f.ID] = f
	}
	return out
}

// TestSampleRatesAndTotals: two samples a second apart give the rates of
// what happened between them, the totals so far and a chart of both.
func TestSampleRatesAndTotals(t *testing.T) {
	m := metrics.New(metrics.Sources{})
	d := New(m.Gatherer(), m.RecentLatency, Options{History: 3})
	t0 := time.Now()
	m.ObserveCommand("deposit", metrics.OutcomeOK, 2*time.Millisecond, 1, 1)
	d.Sample(t0)
	for i := range 10 {
		m.ObserveCommand("deposit", metrics.OutcomeOK, time.Duration(i+1)*time.Millisecond, 1, 2)
	}
	m.ObserveCommand("withdraw", metrics.OutcomeRejected, time.Millisecond, 1, 0)
	m.ObserveRetry()
	m.ObserveAdmission(5 * time.Millisecond) // waited
	m.ObserveAdmission(0)                    // did not
	d.Sample(t0.Add(2 * time.Second))
	f := figureMap(d.View())
	for id, want := range map[string]float64{
		"commands_per_second":        5.5, // 11 in 2 s
		"events_per_second":          10,
		"commands_total":             12,
		"events_total":               21,
		"retries_per_second":         0.5,
		"admission_waits_per_second": 0.5,
		"conflicts_per_second":       0,
	} {
		if f[id].Value != want {
			t.Errorf("%s = %v; want %v", id, f[id].Value, want)
		}
	}
	if got := f["commands_total"]; got.Text != "12" || got.Detail != "11 ok, 1 rejected, 0 conflict, 0 error" {
		t.Errorf("commands %+v", got)
	}
	// The latency quantiles are exact over the 12 recent commands:
	// 1,1,2,2,3,4,...,10 ms: the 6th is 4 ms.
	if got := f["latency_p50"]; got.Text != "4.00 ms" {
		t.Errorf("p50 %+v", got)
	}
	if got := f["latency_p99"]; got.Text != "10.00 ms" || !strings.Contains(got.Detail, "12 commands") {
		t.Errorf("p99 %+v", got)
	}
	if h := f["commands_total"].History; len(h) != 2 || h[0] != 1 || h[1] != 12 {
		t.Errorf("history %v", h)
	}
	if _, ok := f["cache_hit_ratio"]; !ok {
		t.Error("no cache figure")
	}
	// History keeps the last 3 samples.
	d.Sample(t0.Add(3 * time.Second))
	d.Sample(t0.Add(4 * time.Second))
	if h := figureMap(d.View())["commands_total"].History; len(h) != 3 || h[0] != 12 {
		t.Errorf("history %v", h)
	}
	if got := figureMap(d.View())["commands_per_second"]; got.Value != 0 || got.Text != "0.0" {
		t.Errorf("idle rate %+v", got)
	}
}

func TestServeHTTP(t *testing.T) {
	m := metrics.New(metrics.Sources{})
	m.ObserveCommand("deposit", metrics.OutcomeOK, time.Millisecond, 1, 1)
	d := New(m.Gatherer(), m.RecentLatency, Options{})
	get := func(method, path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		d.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		return rec
	}
	page := get("GET", "/")
	body := page.Body.String()
	if page.Code != 200 || !strings.HasPrefix(page.Header().Get("Content-Type"), "text/html") ||
		!strings.Contains(body, `<tr data-id="commands_total">`) || !strings.Contains(body, `<td class="value">1</td>`) ||
		!strings.Contains(body, "<polyline points=") || strings.Contains(body, "http://") || strings.Contains(body, "https://") {
		t.Fatalf("page %d %q\n%s", page.Code, page.Header().Get("Content-Type"), body)
	}
	data := get("GET", "/dashboard/data.json")
	var v View
	if data.Code != 200 || json.Unmarshal(data.Body.Bytes(), &v) != nil || figureMap(v)["commands_total"].Value != 1 {
		t.Fatalf("data %d %s", data.Code, data.Body.String())
	}
	for _, p := range []string{"/dashboard/static/dashboard.js", "/dashboard/static/dashboard.css"} {
		if rec := get("GET", p); rec.Code != 200 || rec.Body.Len() == 0 {
			t.Errorf("%s: %d", p, rec.Code)
		}
	}
	if rec := get("GET", "/dashboard/nope"); rec.Code != http.StatusNotFound {
		t.Errorf("unknown path: %d", rec.Code)
	}
	if rec := get("POST", "/"); rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d %q", rec.Code, rec.Header().Get("Allow"))
	}
	for path, want := range map[string]bool{"/": true, "/dashboard/data.json": true, "/commands/x": false, "/metrics": false, "/dash": false} {
		if Handles(path) != want {
			t.Errorf("Handles(%q) = %v", path, !want)
		}
	}
}

func TestPoints(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want string
	}{
		{nil, ""},
		{[]float64{5}, "0.0,1.0"},
		{[]float64{0, 0}, "0.0,27.0 160.0,27.0"},
		{[]float64{0, 10, 5}, "0.0,27.0 80.0,1.0 160.0,14.0"},
		{[]float64{-2, 2}, "0.0,27.0 160.0,1.0"},
	} {
		if got := Points(tc.in); got != tc.want {
			t.Errorf("Points(%v) = %q; want %q", tc.in, got, tc.want)
		}
	}
}
