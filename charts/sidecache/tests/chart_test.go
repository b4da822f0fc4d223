package tests

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// valueFiles are the values the chart is linted and rendered with.
var valueFiles = []struct{ name, file string }{
	{"default", ""},
	{"full", "full-values.yaml"},
}

func TestLint(t *testing.T) {
	for _, vf := range valueFiles {
		t.Run(vf.name, func(t *testing.T) {
			lint := action.NewLint()
			lint.Strict = true // warnings fail too
			lint.Namespace = namespace
			lint.KubeVersion = kubeVersion
			res := lint.Run([]string{chartDir}, loadValues(t, vf.file))
			for _, m := range res.Messages {
				t.Logf("lint: %s", m)
			}
			for _, err := range res.Errors {
				t.Errorf("lint: %v", err)
			}
			if res.TotalChartsLinted != 1 {
				t.Errorf("linted %d charts, want 1", res.TotalChartsLinted)
			}
		})
	}
}

// TestRender renders the chart and checks every object as the API server
// and the restricted Pod Security admission would, and how they fit
// together: selectors, port names, ConfigMap references, flags.
func TestRender(t *testing.T) {
	flags := sidecacheFlags(t)
	for _, vf := range valueFiles {
		t.Run(vf.name, func(t *testing.T) {
			vals := loadValues(t, vf.file)
			r := render(t, vals)
			checkNames(t, r)

			cms := r.byKind("ConfigMap")
			configMaps := map[string]*corev1.ConfigMap{}
			for _, o := range cms {
				configMaps[o.meta.Name] = o.obj.(*corev1.ConfigMap)
			}
			deps := r.byKind("Deployment")
			if len(deps) != 1 {
				t.Fatalf("%d Deployments, want the demo's", len(deps))
			}
			dep := deps[0].obj.(*appsv1.Deployment)
			checkDeployment(t, dep)
			checkRestricted(t, &dep.Spec.Template.Spec)
			sc := checkSidecar(t, &dep.Spec.Template.Spec, configMaps, flags)

			// The app reaches the sidecar on the port of --listen.
			app := dep.Spec.Template.Spec.Containers[0]
			listen := sc.config["SIDECACHE_LISTEN"]
			if !strings.HasPrefix(listen, "127.0.0.1:") {
				t.Errorf("SIDECACHE_LISTEN %q: a sidecar listens on loopback", listen)
			}
			if got := envValue(app.Env, "REDIS_PORT"); !strings.HasSuffix(listen, ":"+got) {
				t.Errorf("demo app uses port %q, sidecache listens on %q", got, listen)
			}
			if ann := dep.Spec.Template.Annotations["checksum/sidecache-config"]; len(ann) != 64 {
				t.Errorf("pod annotation checksum/sidecache-config = %q, want a sha256", ann)
			}

			svcs := r.byKind("Service")
			sms := r.byKind("ServiceMonitor")
			rules := r.byKind("PrometheusRule")
			if vf.file == "" {
				if len(svcs)+len(sms)+len(rules) != 0 || len(cms) != 1 {
					t.Errorf("defaults render %d Services, %d ServiceMonitors, %d PrometheusRules and %d ConfigMaps; want only the config ConfigMap",
						len(svcs), len(sms), len(rules), len(cms))
				}
				return
			}
			if len(svcs) != 1 || len(sms) != 1 || len(rules) != 1 || len(cms) != 2 {
				t.Fatalf("full values render %d Services, %d ServiceMonitors, %d PrometheusRules, %d ConfigMaps; want 1, 1, 1, 2",
					len(svcs), len(sms), len(rules), len(cms))
			}
			svc := svcs[0].obj.(*corev1.Service)
			checkService(t, svc, dep, sc.admin)
			checkServiceMonitor(t, sms[0].obj.(*monitoringv1.ServiceMonitor), svc)
			checkRules(t, rules[0].obj.(*monitoringv1.PrometheusRule))
			var dash *corev1.ConfigMap
			for _, cm := range configMaps {
				if cm.Labels["grafana_dashboard"] == "1" {
					dash = cm
				}
			}
			if dash == nil {
				t.Fatal("no ConfigMap labelled grafana_dashboard=1")
			}
			checkDashboard(t, dash.Data["sidecache.json"])
		})
	}
}

// checkNames checks what the API server validates in every object's
// metadata.
func checkNames(t *testing.T, r rendered) {
	t.Helper()
	seen := map[string]bool{}
	for _, o := range r.objects {
		id := o.kind + "/" + o.meta.Namespace + "/" + o.meta.Name
		if seen[id] {
			t.Errorf("%s rendered twice", id)
		}
		seen[id] = true
		for _, msg := range validation.IsDNS1123Subdomain(o.meta.Name) {
			t.Errorf("%s: name %q: %s", o.source, o.meta.Name, msg)
		}
		for k, v := range o.meta.Labels {
			for _, msg := range append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...) {
				t.Errorf("%s: label %s=%q: %s", o.source, k, v, msg)
			}
		}
	}
}

func checkDeployment(t *testing.T, dep *appsv1.Deployment) {
	t.Helper()
	sel := dep.Spec.Selector
	if sel == nil || len(sel.MatchLabels) == 0 {
		t.Fatal("Deployment has no selector")
	}
	if !labels.SelectorFromSet(sel.MatchLabels).Matches(labels.Set(dep.Spec.Template.Labels)) {
		t.Errorf("Deployment selector %v does not match its pod labels %v", sel.MatchLabels, dep.Spec.Template.Labels)
	}
	spec := dep.Spec.Template.Spec
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("pod mounts a service account token it does not need")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want one app container", len(spec.Containers))
	}
	names := map[string]bool{}
	for _, v := range spec.Volumes {
		if names[v.Name] {
			t.Errorf("volume %q twice", v.Name)
		}
		names[v.Name] = true
	}
	ports := map[string]bool{}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		for _, msg := range validation.IsDNS1123Label(c.Name) {
			t.Errorf("container name %q: %s", c.Name, msg)
		}
		for _, m := range c.VolumeMounts {
			if !names[m.Name] {
				t.Errorf("container %s mounts volume %q, which the pod does not have", c.Name, m.Name)
			}
		}
		for _, p := range c.Ports {
			for _, msg := range validation.IsValidPortName(p.Name) {
				t.Errorf("container %s port name %q: %s", c.Name, p.Name, msg)
			}
			if ports[p.Name] {
				t.Errorf("port name %q twice in the pod", p.Name)
			}
			ports[p.Name] = true
		}
		for _, e := range c.Env {
			for _, msg := range validation.IsEnvVarName(e.Name) {
				t.Errorf("container %s env %q: %s", c.Name, e.Name, msg)
			}
		}
	}
}

// checkRestricted checks the pod against the restricted Pod Security
// Standard (https://kubernetes.io/docs/concepts/security/pod-security-standards/),
// plus a read-only root filesystem.
func checkRestricted(t *testing.T, spec *corev1.PodSpec) {
	t.Helper()
	psc := spec.SecurityContext
	if psc == nil {
		t.Fatal("no pod securityContext")
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Error("pod uses host namespaces")
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("pod securityContext.runAsNonRoot is not true")
	}
	if psc.RunAsUser == nil || *psc.RunAsUser != 65532 {
		t.Errorf("pod securityContext.runAsUser = %v, want 65532", psc.RunAsUser)
	}
	if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod seccompProfile = %v, want RuntimeDefault", psc.SeccompProfile)
	}
	allowed := func(v corev1.Volume) bool {
		s := v.VolumeSource
		return s.ConfigMap != nil || s.CSI != nil || s.DownwardAPI != nil || s.EmptyDir != nil ||
			s.Ephemeral != nil || s.PersistentVolumeClaim != nil || s.Projected != nil || s.Secret != nil
	}
	for _, v := range spec.Volumes {
		if !allowed(v) {
			t.Errorf("volume %q is of a type the restricted profile forbids", v.Name)
		}
	}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("container %s has no securityContext", c.Name)
			continue
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("container %s is privileged", c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container %s: allowPrivilegeEscalation is not false", c.Name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("container %s: readOnlyRootFilesystem is not true", c.Name)
		}
		if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot {
			t.Errorf("container %s: runAsNonRoot false", c.Name)
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			t.Errorf("container %s runs as root", c.Name)
		}
		if sc.SeccompProfile != nil && sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault && sc.SeccompProfile.Type != corev1.SeccompProfileTypeLocalhost {
			t.Errorf("container %s: seccompProfile %s", c.Name, sc.SeccompProfile.Type)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("container %s does not drop ALL capabilities", c.Name)
		} else if len(sc.Capabilities.Add) > 0 && !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_BIND_SERVICE"}) {
			t.Errorf("container %s adds capabilities %v", c.Name, sc.Capabilities.Add)
		}
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				t.Errorf("container %s uses hostPort %d", c.Name, p.HostPort)
			}
		}
	}
}

// sidecar is what checkSidecar found.
type sidecar struct {
	c      corev1.Container
	config map[string]string // the ConfigMap's SIDECACHE_* variables
	admin  corev1.ContainerPort
}

// checkSidecar checks the native sidecar: an init container with
// restartPolicy Always, its probes, GOMEMLIMIT and its ConfigMap, whose
// every key must be a flag of the sidecache binary.
func checkSidecar(t *testing.T, spec *corev1.PodSpec, configMaps map[string]*corev1.ConfigMap, flags map[string]bool) sidecar {
	t.Helper()
	var sc sidecar
	i := slices.IndexFunc(spec.InitContainers, func(c corev1.Container) bool { return c.Name == "sidecache" })
	if i < 0 {
		t.Fatalf("no sidecache init container in %v", spec.InitContainers)
	}
	sc.c = spec.InitContainers[i]
	c := sc.c
	if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("sidecache init container restartPolicy = %v, want Always (a native sidecar)", c.RestartPolicy)
	}
	if c.Image == "" || !strings.Contains(c.Image, "sidecache") {
		t.Errorf("image %q", c.Image)
	}
	if len(c.Command) > 0 {
		t.Errorf("command %v overrides the image's entrypoint", c.Command)
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "sidecache-admin" {
		t.Fatalf("ports %v, want the admin port", c.Ports)
	}
	sc.admin = c.Ports[0]

	// Probes: HTTP on the admin port.
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"startup", c.StartupProbe, "/healthz"},
		{"liveness", c.LivenessProbe, "/healthz"},
		{"readiness", c.ReadinessProbe, "/readyz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe %v: want an HTTP probe", p.name, p.probe)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path || g.Port.String() != sc.admin.Name {
			t.Errorf("%s probe GET %s on port %s, want %s on %s", p.name, g.Path, g.Port.String(), p.path, sc.admin.Name)
		}
		if p.probe.PeriodSeconds < 1 || p.probe.FailureThreshold < 1 || p.probe.TimeoutSeconds < 1 {
			t.Errorf("%s probe timing %+v", p.name, p.probe.ProbeHandler)
		}
	}

	// Configuration: envFrom the ConfigMap, secrets from a Secret only.
	if len(c.EnvFrom) == 0 || c.EnvFrom[0].ConfigMapRef == nil {
		t.Fatalf("envFrom %v, want the ConfigMap first", c.EnvFrom)
	}
	cm := configMaps[c.EnvFrom[0].ConfigMapRef.Name]
	if cm == nil {
		t.Fatalf("envFrom ConfigMap %q is not rendered", c.EnvFrom[0].ConfigMapRef.Name)
	}
	sc.config = cm.Data
	for k, v := range cm.Data {
		if !flags[k] {
			t.Errorf("ConfigMap key %s is not the environment variable of any sidecache flag", k)
		}
		if strings.Contains(k, "PASS") || strings.Contains(k, "TLS_KEY") {
			t.Errorf("ConfigMap holds the secret %s", k)
		}
		if strings.Contains(v, "@") && strings.Contains(v, "://") {
			t.Errorf("ConfigMap %s=%q has credentials in a URL", k, v)
		}
	}
	if want := "0.0.0.0:" + strconv.Itoa(int(sc.admin.ContainerPort)); cm.Data["SIDECACHE_ADMIN_LISTEN"] != want {
		t.Errorf("SIDECACHE_ADMIN_LISTEN = %q, want %q (the probes' port)", cm.Data["SIDECACHE_ADMIN_LISTEN"], want)
	}

	// GOMEMLIMIT: the memory limit times goMemLimitPercent.
	limit, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		t.Fatal("no memory limit")
	}
	if _, ok := c.Resources.Requests[corev1.ResourceMemory]; !ok {
		t.Error("no memory request")
	}
	got := envValue(c.Env, "GOMEMLIMIT")
	n, err := strconv.ParseInt(got, 10, 64)
	if err != nil {
		t.Fatalf("GOMEMLIMIT %q: %v", got, err)
	}
	if ratio := float64(n) / float64(limit.Value()); ratio < 0.8 || ratio > 0.95 {
		t.Errorf("GOMEMLIMIT %d is %.3f of the memory limit %s; want 0.8 to 0.95", n, ratio, limit.String())
	}
	return sc
}

func checkService(t *testing.T, svc *corev1.Service, dep *appsv1.Deployment, admin corev1.ContainerPort) {
	t.Helper()
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(dep.Spec.Template.Labels)) || len(svc.Spec.Selector) == 0 {
		t.Errorf("metrics Service selector %v does not select the demo pods %v", svc.Spec.Selector, dep.Spec.Template.Labels)
	}
	if len(svc.Spec.Ports) != 1 {
		t.Fatalf("Service ports %v", svc.Spec.Ports)
	}
	p := svc.Spec.Ports[0]
	if p.TargetPort.String() != admin.Name || p.Port != admin.ContainerPort {
		t.Errorf("Service port %d -> %s, want %d -> %s", p.Port, p.TargetPort.String(), admin.ContainerPort, admin.Name)
	}
}

func checkServiceMonitor(t *testing.T, sm *monitoringv1.ServiceMonitor, svc *corev1.Service) {
	t.Helper()
	if !labels.SelectorFromSet(sm.Spec.Selector.MatchLabels).Matches(labels.Set(svc.Labels)) || len(sm.Spec.Selector.MatchLabels) == 0 {
		t.Errorf("ServiceMonitor selector %v does not select the Service's labels %v", sm.Spec.Selector.MatchLabels, svc.Labels)
	}
	if sm.Namespace != "" && !slices.Contains(sm.Spec.NamespaceSelector.MatchNames, namespace) {
		t.Errorf("ServiceMonitor in %q does not look in the release namespace %q", sm.Namespace, namespace)
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("endpoints %v", sm.Spec.Endpoints)
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Port != svc.Spec.Ports[0].Name || ep.Path != "/metrics" {
		t.Errorf("ServiceMonitor scrapes port %q path %q, want %q /metrics", ep.Port, ep.Path, svc.Spec.Ports[0].Name)
	}
}

func envValue(env []corev1.EnvVar, name string) string {
	for _, e := range env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// TestGoMemLimit checks the template's quantity arithmetic against
// Kubernetes's own parser.
func TestGoMemLimit(t *testing.T) {
	for _, tc := range []struct {
		limit   any
		percent int
	}{
		{"512Mi", 90},
		{"1Gi", 90},
		{"3Gi", 85},
		{"1500M", 90},
		{"2G", 75},
		{"786432Ki", 90},
		{536870912, 90},
		{"1Ti", 95},
	} {
		t.Run(fmt.Sprint(tc.limit, "/", tc.percent), func(t *testing.T) {
			vals := map[string]any{
				"resources":         map[string]any{"limits": map[string]any{"memory": tc.limit}},
				"goMemLimitPercent": tc.percent,
			}
			r := render(t, vals)
			dep := r.byKind("Deployment")[0].obj.(*appsv1.Deployment)
			c := dep.Spec.Template.Spec.InitContainers[0]
			q := resource.MustParse(fmt.Sprint(tc.limit))
			want := q.Value() * int64(tc.percent) / 100
			if got := envValue(c.Env, "GOMEMLIMIT"); got != strconv.FormatInt(want, 10) {
				t.Errorf("GOMEMLIMIT = %s, want %d", got, want)
			}
		})
	}
	t.Run("no limit", func(t *testing.T) {
		r := render(t, map[string]any{"resources": map[string]any{"limits": nil}})
		c := r.byKind("Deployment")[0].obj.(*appsv1.Deployment).Spec.Template.Spec.InitContainers[0]
		if v := envValue(c.Env, "GOMEMLIMIT"); v != "" {
			t.Errorf("GOMEMLIMIT %q without a memory limit", v)
		}
	})
}

// TestRenderRefuses checks the values the chart refuses, with a message
// that names them.
func TestRenderRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals map[string]any
		want string
	}{
		{"password in ConfigMap", map[string]any{"config": map[string]any{"requirepass": "hunter2"}}, "config.requirepass is a secret"},
		{"TLS key in ConfigMap", map[string]any{"config": map[string]any{"l2-tls-key": "/k"}}, "config.l2-tls-key is a secret"},
		{"admin-listen in config", map[string]any{"config": map[string]any{"admin-listen": ":1"}}, "set admin.port"},
		{"dashes in flag name", map[string]any{"config": map[string]any{"--listen": ":1"}}, "config.--listen"},
		{"fractional memory limit", map[string]any{"resources": map[string]any{"limits": map[string]any{"memory": "0.5Gi"}}}, `memory quantity "0.5Gi"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := renderChart(loadChart(t), tc.vals)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("render error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestIncludeFromParentChart is the README's example: a parent chart that
// depends on sidecache adds the sidecar to its own Deployment with the
// named templates.
func TestIncludeFromParentChart(t *testing.T) {
	parent, err := loader.LoadDir("testdata/parent")
	if err != nil {
		t.Fatal(err)
	}
	parent.SetDependencies(loadChart(t))
	parent.Metadata.Dependencies = []*chart.Dependency{{Name: "sidecache", Version: "0.1.0", Repository: "file://../sidecache"}}
	vals := map[string]any{"sidecache": map[string]any{"demo": map[string]any{"enabled": false}}}
	manifest, notes, err := renderChart(parent, vals)
	if err != nil {
		t.Fatalf("render parent: %v", err)
	}
	r := decodeManifest(t, manifest, notes)
	deps := r.byKind("Deployment")
	if len(deps) != 1 || deps[0].meta.Name != "shop-web" {
		t.Fatalf("Deployments %v, want only the parent's shop-web", deps)
	}
	dep := deps[0].obj.(*appsv1.Deployment)
	checkDeployment(t, dep)
	checkRestricted(t, &dep.Spec.Template.Spec)
	configMaps := map[string]*corev1.ConfigMap{}
	for _, o := range r.byKind("ConfigMap") {
		configMaps[o.meta.Name] = o.obj.(*corev1.ConfigMap)
	}
	sc := checkSidecar(t, &dep.Spec.Template.Spec, configMaps, sidecacheFlags(t))
	if sc.config["SIDECACHE_L1_MAX_BYTES"] != "32mb" {
		t.Errorf("the parent's value sidecache.config.l1-max-bytes did not reach the ConfigMap: %v", sc.config)
	}
	if dep.Spec.Template.Labels["sidecache.io/sidecar"] == "" {
		t.Errorf("parent pod labels %v lack sidecache.podLabels", dep.Spec.Template.Labels)
	}
}
