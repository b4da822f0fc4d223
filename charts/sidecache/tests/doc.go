// Package tests checks sidecache's Helm chart (charts/sidecache) and its
// Dockerfile. It is a module of its own so that Helm, the Kubernetes API
// types, the prometheus-operator types, Prometheus's PromQL parser and
// BuildKit's Dockerfile parser stay out of sidecache's own module.
//
// The chart tests render the chart through Helm's Go API (what `helm lint`
// and `helm template` run), with the default values and with
// testdata/full-values.yaml, decode every object strictly into its API type,
// and check the native sidecar, the restricted Pod Security profile, the
// probes, GOMEMLIMIT, and that the ConfigMap names only flags the sidecache
// binary has. Every PromQL expression of the PrometheusRule and of the
// Grafana dashboard must parse and name only metrics sidecache exports.
//
// The Dockerfile tests parse it with BuildKit's parser and run its build
// command on the files its .dockerignore lets into the context, then check
// that the binary is statically linked.
//
// Run them with `make test-chart` or `cd charts/sidecache/tests && go test ./...`.
package tests
