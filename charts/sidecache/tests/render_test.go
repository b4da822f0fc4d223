package tests

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// chartDir is the chart under test, relative to this package.
const chartDir = ".."

const (
	releaseName = "shop"
	namespace   = "shop-ns"
)

// kubeVersion is the cluster version the chart is rendered for: the oldest
// with native sidecars on by default.
var kubeVersion = &chartutil.KubeVersion{Version: "v1.29.0", Major: "1", Minor: "29"}

// object is one rendered manifest, decoded into its API type.
type object struct {
	source string // the template it came from
	kind   string
	meta   metav1.ObjectMeta
	obj    any
}

// rendered is a release's objects by kind.
type rendered struct {
	objects []object
	notes   string
}

func (r rendered) byKind(kind string) []object {
	var out []object
	for _, o := range r.objects {
		if o.kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// newTypes maps each apiVersion/kind the chart may render to a new value of
// its Go type. Anything else is an error.
var newTypes = map[string]func() any{
	"v1/ConfigMap":       func() any { return &corev1.ConfigMap{} },
	"v1/Service":         func() any { return &corev1.Service{} },
	"apps/v1/Deployment": func() any { return &appsv1.Deployment{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &monitoringv1.ServiceMonitor{} },
	"monitoring.coreos.com/v1/PrometheusRule": func() any { return &monitoringv1.PrometheusRule{} },
}

// loadValues reads a values file from testdata; "" is the chart's defaults.
func loadValues(t *testing.T, file string) map[string]any {
	t.Helper()
	if file == "" {
		return map[string]any{}
	}
	vals, err := chartutil.ReadValuesFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	return vals
}

// loadChart loads the chart afresh (rendering may change a loaded chart).
func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	return ch
}

// renderChart runs what `helm template` runs: a client-only dry-run install.
func renderChart(ch *chart.Chart, vals map[string]any) (manifest, notes string, err error) {
	inst := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	inst.DryRun = true
	inst.ClientOnly = true
	inst.Replace = true
	inst.ReleaseName = releaseName
	inst.Namespace = namespace
	inst.KubeVersion = kubeVersion
	rel, err := inst.Run(ch, vals)
	if err != nil {
		return "", "", err
	}
	if len(rel.Hooks) > 0 {
		return "", "", fmt.Errorf("chart renders %d hooks; none expected", len(rel.Hooks))
	}
	return rel.Manifest, rel.Info.Notes, nil
}

// render renders the chart with vals and decodes every object strictly.
func render(t *testing.T, vals map[string]any) rendered {
	t.Helper()
	manifest, notes, err := renderChart(loadChart(t), vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return decodeManifest(t, manifest, notes)
}

// decodeManifest splits a manifest and decodes each document strictly into
// its Kubernetes API type: an unknown or misspelt field, a duplicate key or a
// value of the wrong type fails the test.
func decodeManifest(t *testing.T, manifest, notes string) rendered {
	t.Helper()
	docs := releaseutil.SplitManifests(manifest)
	keys := make([]string, 0, len(docs))
	for k := range docs {
		keys = append(keys, k)
	}
	sort.Sort(releaseutil.BySplitManifestsOrder(keys))
	r := rendered{notes: notes}
	for _, k := range keys {
		doc := docs[k]
		source := "?"
		if first, _, ok := strings.Cut(doc, "\n"); ok && strings.HasPrefix(first, "# Source: ") {
			source = strings.TrimPrefix(first, "# Source: ")
		}
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("%s: %v", source, err)
		}
		gvk := tm.APIVersion + "/" + tm.Kind
		newObj, ok := newTypes[gvk]
		if !ok {
			t.Fatalf("%s: unexpected object %s", source, gvk)
		}
		obj := newObj()
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("%s: strict decode into %T: %v\n%s", source, obj, err, doc)
		}
		r.objects = append(r.objects, object{source: source, kind: tm.Kind, meta: objectMeta(obj), obj: obj})
	}
	return r
}

func stripComments(doc string) string {
	var b bytes.Buffer
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

func objectMeta(obj any) metav1.ObjectMeta {
	switch o := obj.(type) {
	case *corev1.ConfigMap:
		return o.ObjectMeta
	case *corev1.Service:
		return o.ObjectMeta
	case *appsv1.Deployment:
		return o.ObjectMeta
	case *monitoringv1.ServiceMonitor:
		return o.ObjectMeta
	case *monitoringv1.PrometheusRule:
		return o.ObjectMeta
	}
	panic(fmt.Sprintf("no ObjectMeta for %T", obj))
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
