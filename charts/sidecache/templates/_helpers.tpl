{{/*
Named templates. The ones documented in README.md ("Add the sidecar to your
own Deployment") are the chart's interface to other charts:
  sidecache.sidecar             the sidecar container (an initContainers entry)
  sidecache.volumes             the volumes it needs (a list of volumes)
  sidecache.podLabels           labels the metrics Service selects
  sidecache.podAnnotations      the ConfigMap checksum (restarts pods on change)
  sidecache.podSecurityContext  the restricted pod security context
Each takes the sidecache chart's context: `.` inside this chart, or
`.Subcharts.sidecache` in a parent chart that depends on it.
*/}}

{{- define "sidecache.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sidecache.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sidecache.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "sidecache.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sidecache.configMapName" -}}
{{- printf "%s-config" (include "sidecache.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sidecache.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/*
sidecache.podLabels: put these on the pod template of every workload that
carries the sidecar; the metrics Service selects them.
*/}}
{{- define "sidecache.podLabels" -}}
sidecache.io/sidecar: {{ include "sidecache.fullname" . }}
{{- end }}

{{/*
sidecache.podAnnotations: a checksum of the sidecar's configuration, so that
pods restart when it changes.
*/}}
{{- define "sidecache.podAnnotations" -}}
checksum/sidecache-config: {{ include "sidecache.configData" . | sha256sum }}
{{- end }}

{{- define "sidecache.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{/*
sidecache.configData: the ConfigMap's data, each flag of .Values.config as
SIDECACHE_<FLAG>, plus the admin listener.
*/}}
{{- define "sidecache.configData" -}}
{{- range $flag, $value := .Values.config }}
{{- if has $flag (list "admin-listen" "admin-pprof") }}
{{- fail (printf "config.%s: set admin.port and admin.pprof instead, so the probes follow" $flag) }}
{{- end }}
{{- if has $flag (list "requirepass" "l2-tls-key") }}
{{- fail (printf "config.%s is a secret: put SIDECACHE_%s in the Secret named by secretEnv" $flag ($flag | upper | replace "-" "_")) }}
{{- end }}
{{- if not (regexMatch "^[a-z0-9][a-z0-9-]*$" $flag) }}
{{- fail (printf "config.%s: want a flag name without dashes in front, such as l1-max-bytes" $flag) }}
{{- end }}
{{- if kindIs "float64" $value }}
{{- if eq $value (floor $value) }}
{{- $value = int64 $value }}
{{- end }}
{{- end }}
{{ printf "SIDECACHE_%s" ($flag | upper | replace "-" "_") }}: {{ $value | toString | quote }}
{{- end }}
SIDECACHE_ADMIN_LISTEN: {{ printf "0.0.0.0:%d" (int .Values.admin.port) | quote }}
SIDECACHE_ADMIN_PPROF: {{ .Values.admin.pprof | toString | quote }}
{{- end }}

{{/*
sidecache.bytes: a Kubernetes memory quantity (512Mi, 1G, 536870912) in
bytes. Fails on forms it does not know (fractions, exponents, m).
*/}}
{{- define "sidecache.bytes" -}}
{{- $q := . }}
{{- if kindIs "float64" $q }}{{ $q = int64 $q }}{{ end }}
{{- $q = toString $q }}
{{- if not (regexMatch "^[0-9]+([KMGTPE]i|[kMGTPE])?$" $q) }}
{{- fail (printf "memory quantity %q: want a whole number with an optional unit (Ki, Mi, Gi, Ti, k, M, G, T)" $q) }}
{{- end }}
{{- $units := dict "" 1 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "Pi" 1125899906842624 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "P" 1000000000000000 }}
{{- $num := regexReplaceAll "[^0-9].*$" $q "" | int64 }}
{{- $unit := regexReplaceAll "^[0-9]+" $q "" }}
{{- mul $num (get $units $unit) }}
{{- end }}

{{/*
sidecache.sidecar: the sidecache container, a native sidecar. Include it
under initContainers:
  initContainers:
    {{- include "sidecache.sidecar" . | nindent 8 }}
*/}}
{{- define "sidecache.sidecar" -}}
- name: sidecache
  image: {{ include "sidecache.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  # A native sidecar: started before the app containers and kept running
  # beside them until they have stopped.
  restartPolicy: Always
  ports:
    - name: sidecache-admin
      containerPort: {{ int .Values.admin.port }}
      protocol: TCP
  envFrom:
    - configMapRef:
        name: {{ include "sidecache.configMapName" . }}
    {{- if .Values.secretEnv }}
    - secretRef:
        name: {{ .Values.secretEnv }}
    {{- end }}
  {{- $limit := dig "limits" "memory" "" (.Values.resources | default dict) }}
  {{- if or $limit .Values.extraEnv }}
  env:
    {{- if $limit }}
    - name: GOMEMLIMIT
      value: {{ div (mul (include "sidecache.bytes" $limit | int64) (int .Values.goMemLimitPercent)) 100 | toString | quote }}
    {{- end }}
    {{- with .Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  startupProbe:
    httpGet:
      path: /healthz
      port: sidecache-admin
    {{- toYaml .Values.probes.startup | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: sidecache-admin
    {{- toYaml .Values.probes.liveness | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: sidecache-admin
    {{- toYaml .Values.probes.readiness | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: sidecache-tmp
      mountPath: /tmp
    {{- with .Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/*
sidecache.volumes: the volumes the sidecar mounts. Include it under volumes:
  volumes:
    {{- include "sidecache.volumes" . | nindent 8 }}
*/}}
{{- define "sidecache.volumes" -}}
- name: sidecache-tmp
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}
