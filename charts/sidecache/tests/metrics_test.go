package tests

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// exportedMetrics are the metrics sidecache exports (issue 5's fixed list),
// with their type where a series name adds a suffix.
var exportedMetrics = map[string]string{
	"sidecache_requests_total":             "counter",
	"sidecache_request_duration_seconds":   "histogram",
	"sidecache_breaker_state":              "gauge",
	"sidecache_breaker_transitions_total":  "counter",
	"sidecache_l2_hit_ratio":               "gauge",
	"sidecache_l2_hit_ratio_baseline":      "gauge",
	"sidecache_l1_bytes":                   "gauge",
	"sidecache_l1_max_bytes":               "gauge",
	"sidecache_l1_entries":                 "gauge",
	"sidecache_l1_evictions_total":         "counter",
	"sidecache_l1_expirations_total":       "counter",
	"sidecache_l1_stale_served_total":      "counter",
	"sidecache_l2_bytes":                   "gauge",
	"sidecache_l2_max_bytes":               "gauge",
	"sidecache_l2_entries":                 "gauge",
	"sidecache_l2_evictions_total":         "counter",
	"sidecache_l2_expirations_total":       "counter",
	"sidecache_connections":                "gauge",
	"sidecache_connections_rejected_total": "counter",
	"sidecache_connections_total":          "counter",
	"sidecache_origin_admitted_total":      "counter",
	"sidecache_origin_shed_total":          "counter",
	"sidecache_origin_loads_total":         "counter",
	"sidecache_origin_errors_total":        "counter",
	"sidecache_memory_limit_bytes":         "gauge",
	"process_resident_memory_bytes":        "gauge",
	"go_goroutines":                        "gauge",
	"go_gc_duration_seconds":               "summary",
	"go_memstats_heap_inuse_bytes":         "gauge",
}

// seriesExported reports whether a series name is one sidecache exports: a
// metric of the list, a histogram's _bucket, _sum or _count, a summary's
// _sum or _count, or another metric of the Go collector (go_memstats_*).
func seriesExported(name string) bool {
	if _, ok := exportedMetrics[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch exportedMetrics[base] {
		case "histogram":
			return true
		case "summary":
			return suffix != "_bucket"
		}
	}
	return strings.HasPrefix(name, "go_memstats_")
}

// exprMetrics parses a PromQL expression and returns the metrics it
// selects, and what is wrong: a parse error, a metric sidecache does not
// export, a name pattern, no metric at all.
func exprMetrics(expr string) (names, problems []string) {
	e, err := parser.ParseExpr(expr)
	if err != nil {
		return nil, []string{err.Error()}
	}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel {
				if m.Type != labels.MatchEqual {
					problems = append(problems, fmt.Sprintf("selects metrics by a pattern (%s)", m))
				}
				name = m.Value
			}
		}
		if !seriesExported(name) {
			problems = append(problems, fmt.Sprintf("names %q, which sidecache does not export", name))
		}
		names = append(names, name)
		return nil
	})
	if len(names) == 0 {
		problems = append(problems, "selects no metric")
	}
	return names, problems
}

// checkExpr reports exprMetrics's problems as test errors.
func checkExpr(t *testing.T, where, expr string) []string {
	t.Helper()
	names, problems := exprMetrics(expr)
	for _, p := range problems {
		t.Errorf("%s: %q: %s", where, expr, p)
	}
	return names
}

// checkRules checks the PrometheusRule: the five alerts, each expression
// parses and names exported metrics, and durations parse.
func checkRules(t *testing.T, pr *monitoringv1.PrometheusRule) {
	t.Helper()
	want := map[string]bool{
		"SidecacheBreakerOpen":       false,
		"SidecacheL2HitRateCollapse": false,
		"SidecacheMemoryNearBudget":  false,
		"SidecacheOriginShedding":    false,
		"SidecacheL2LatencyHigh":     false,
	}
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			where := g.Name + "/" + r.Alert + r.Record
			if _, ok := want[r.Alert]; !ok {
				t.Errorf("unexpected rule %s", where)
				continue
			}
			want[r.Alert] = true
			checkExpr(t, where, r.Expr.String())
			if r.For == nil {
				t.Errorf("%s: no for", where)
			} else if _, err := model.ParseDuration(string(*r.For)); err != nil {
				t.Errorf("%s: for %q: %v", where, *r.For, err)
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: want a severity label, a summary and a description", where)
			}
			if !strings.Contains(r.Annotations["description"], "{{ $labels.pod }}") {
				t.Errorf("%s: description %q does not name the pod", where, r.Annotations["description"])
			}
		}
	}
	for name, found := range want {
		if !found {
			t.Errorf("alert %s missing", name)
		}
	}
}

// grafanaVar matches Grafana's template variables in a query.
var grafanaVar = regexp.MustCompile(`\$\{?(\w+)\}?`)

// checkDashboard checks the Grafana dashboard: valid JSON, every panel's
// queries parse (with Grafana's variables replaced) and name exported
// metrics, and together they show every sidecache_ metric.
func checkDashboard(t *testing.T, data string) {
	t.Helper()
	var d struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(data), &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard uid %q title %q with %d panels", d.UID, d.Title, len(d.Panels))
	}
	shown := map[string]bool{}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			expr := grafanaVar.ReplaceAllStringFunc(tg.Expr, func(v string) string {
				if strings.Contains(v, "__rate_interval") || strings.Contains(v, "__interval") {
					return "5m"
				}
				return "x"
			})
			for _, n := range checkExpr(t, "dashboard panel "+p.Title, expr) {
				shown[strings.TrimSuffix(n, "_bucket")] = true
			}
		}
	}
	for name := range exportedMetrics {
		if strings.HasPrefix(name, "sidecache_") && !shown[name] {
			t.Errorf("dashboard shows no panel of %s", name)
		}
	}
}

// TestCheckExpr makes sure the metric check can fail.
func TestCheckExpr(t *testing.T) {
	for _, tc := range []struct {
		expr string
		ok   bool
	}{
		{`sum(rate(sidecache_requests_total[5m]))`, true},
		{`histogram_quantile(0.99, sum by (le) (rate(sidecache_request_duration_seconds_bucket[5m])))`, true},
		{`rate(go_gc_duration_seconds_count[5m])`, true},
		{`go_memstats_heap_inuse_bytes`, true},
		{`sidecache_requests_total_bucket`, false},
		{`sidecache_breaker_open`, false},
		{`{__name__=~"sidecache_.*"}`, false},
		{`rate(go_gc_duration_seconds_bucket[5m])`, false},
		{`sum(rate(sidecache_requests_total[5m])`, false},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			_, problems := exprMetrics(tc.expr)
			if (len(problems) == 0) != tc.ok {
				t.Errorf("exprMetrics(%q) problems %q, want ok=%v", tc.expr, problems, tc.ok)
			}
		})
	}
}
