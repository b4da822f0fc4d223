package test

import (
	"strconv"
	"strings"
	"testing"
)

// TestE2EInfoShowsMetrics: INFO sidecache shows every count of
// sidecache_requests_total (requests_<command>_<outcome>) and of the
// latency histograms (latency_<tier>_count), with the same values as
// /metrics once the load has stopped, and p50 <= p99.
func TestE2EInfoShowsMetrics(t *testing.T) {
	rs := StartRedisServer(t)
	sc := StartSidecache(t, "--l2", "redis://"+rs.Addr)
	metricsLoad(t, sc.Addr, 3, 50)
	c := sc.Dial(t)
	info := infoFields(t, c, "sidecache")
	m := scrape(t, adminAddr(t, sc))
	compared := 0
	for k, v := range m {
		name, labels, ok := strings.Cut(k, "{")
		if !ok {
			continue
		}
		switch name {
		case "sidecache_requests_total":
			command := strings.ReplaceAll(labelValue(labels, "command"), "|", "_")
			if command == "info" {
				continue // the INFO above counts itself after its reply
			}
			field := "requests_" + command + "_" + labelValue(labels, "outcome")
			got, ok := info[field]
			if !ok && v == 0 {
				continue
			}
			if got != strconv.FormatFloat(v, 'f', -1, 64) {
				t.Errorf("INFO %s = %q, /metrics %s = %v", field, got, k, v)
			}
			compared++
		case "sidecache_request_duration_seconds_count":
			tier := labelValue(labels, "tier")
			if v == 0 {
				if _, ok := info["latency_"+tier+"_count"]; ok {
					t.Errorf("INFO shows latency_%s_count for a tier /metrics has not observed", tier)
				}
				continue
			}
			field := "latency_" + tier + "_count"
			if got := info[field]; got != strconv.FormatFloat(v, 'f', -1, 64) {
				t.Errorf("INFO %s = %q, /metrics %s = %v", field, got, k, v)
			}
			p50, err1 := strconv.ParseFloat(info["latency_"+tier+"_p50_usec"], 64)
			p99, err2 := strconv.ParseFloat(info["latency_"+tier+"_p99_usec"], 64)
			if err1 != nil || err2 != nil || p50 <= 0 || p50 > p99 {
				t.Errorf("INFO latency_%s p50 %q p99 %q", tier, info["latency_"+tier+"_p50_usec"], info["latency_"+tier+"_p99_usec"])
			}
			compared++
		}
	}
	// The load ran SET, GET, MGET, INCR and an unknown command on every
	// connection; the L1, L2 and store tiers all served.
	for _, f := range []string{"requests_set_ok", "requests_get_l1_hit", "requests_get_miss", "requests_mget_l1_hit", "requests_incr_error", "requests_other_error", "latency_l1_count", "latency_l2_count", "latency_store_count"} {
		if n, _ := strconv.Atoi(info[f]); n == 0 {
			t.Errorf("INFO sidecache %s = %q after the load", f, info[f])
		}
	}
	if compared < 10 {
		t.Errorf("compared only %d figures", compared)
	}
}

// labelValue returns label name's value in `a="x",b="y"}`.
func labelValue(labels, name string) string {
	i := strings.Index(labels, name+`="`)
	if i < 0 {
		return ""
	}
	rest := labels[i+len(name)+2:]
	v, _, _ := strings.Cut(rest, `"`)
	return v
}
