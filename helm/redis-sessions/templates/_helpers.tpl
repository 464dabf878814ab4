{{/*
Names. Kubernetes names are capped at 63 characters (DNS label); CronJob names at 52, because the
controller appends an 11-character suffix to the Jobs it creates.
*/}}
{{- define "redis-sessions.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "redis-sessions.fullname" -}}
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

{{/*
Name of a component's objects: (dict "root" $ "component" "api").
*/}}
{{- define "redis-sessions.componentName" -}}
{{- $full := include "redis-sessions.fullname" .root }}
{{- $suffix := printf "-%s" .component }}
{{- printf "%s%s" ($full | trunc (int (sub 63 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{- define "redis-sessions.cronJobName" -}}
{{- $full := include "redis-sessions.fullname" . }}
{{- printf "%s-cleanup" ($full | trunc 44 | trimSuffix "-") }}
{{- end }}

{{- define "redis-sessions.redisName" -}}
{{- include "redis-sessions.componentName" (dict "root" . "component" "redis") }}
{{- end }}

{{- define "redis-sessions.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels: (dict "root" $ "component" "api").
*/}}
{{- define "redis-sessions.labels" -}}
helm.sh/chart: {{ include "redis-sessions.chart" .root }}
{{ include "redis-sessions.selectorLabels" . }}
{{- if .root.Chart.AppVersion }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: {{ include "redis-sessions.name" .root }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "redis-sessions.selectorLabels" -}}
app.kubernetes.io/name: {{ include "redis-sessions.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{- define "redis-sessions.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "redis-sessions.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "redis-sessions.configMapName" -}}
{{- include "redis-sessions.componentName" (dict "root" . "component" "config") }}
{{- end }}

{{- define "redis-sessions.secretName" -}}
{{- default (include "redis-sessions.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/*
Image of a component, falling back to the global image: (dict "root" $ "values" .Values.api).
*/}}
{{- define "redis-sessions.image" -}}
{{- $global := .root.Values.image }}
{{- $own := .values.image }}
{{- $repository := default $global.repository $own.repository }}
{{- $digest := default $global.digest $own.digest }}
{{- if $digest }}
{{- printf "%s@%s" $repository $digest }}
{{- else }}
{{- printf "%s:%s" $repository (default (default .root.Chart.AppVersion $global.tag) $own.tag) }}
{{- end }}
{{- end }}

{{- define "redis-sessions.imagePullPolicy" -}}
{{- default .root.Values.image.pullPolicy .values.image.pullPolicy }}
{{- end }}

{{/*
Settings shared by every container: the ConfigMap, then secrets and the Redis URL as env entries.
*/}}
{{- define "redis-sessions.envFrom" -}}
- configMapRef:
    name: {{ include "redis-sessions.configMapName" . }}
{{- end }}

{{- define "redis-sessions.secretEnv" -}}
{{- $secret := include "redis-sessions.secretName" . }}
{{- $keys := .Values.secrets.keys }}
{{- if .Values.bundledRedis.enabled }}
- name: SESSIONS_REDIS_URL
  value: {{ printf "redis://%s:6379/0" (include "redis-sessions.redisName" .) | quote }}
{{- else if .Values.externalRedis.host }}
{{- /* The password stays out of the URL: a URL would need it percent-encoded, and the Secret holds
it as the Redis server knows it (a managed service's may hold / + = and the like). */}}
{{- $r := .Values.externalRedis }}
{{- if $keys.redisPassword }}
- name: SESSIONS_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.redisPassword }}
{{- end }}
{{- /* The user name goes into the URL percent-encoded (urlquery writes a space as +, which a URL's
user part does not decode). */}}
{{- $auth := ternary (printf "%s@" (urlquery $r.username | replace "+" "%20")) "" (ne $r.username "") }}
- name: SESSIONS_REDIS_URL
  value: {{ printf "%s://%s%s:%d/%d" (ternary "rediss" "redis" $r.tls) $auth $r.host (int $r.port) (int $r.database) | quote }}
{{- else }}
{{- if not $keys.redisUrl }}
{{- fail "secrets.keys.redisUrl is empty: name the Secret key holding the Redis URL, or set externalRedis.host, or enable bundledRedis" }}
{{- end }}
- name: SESSIONS_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.redisUrl }}
{{- end }}
{{- if $keys.queueRedisUrl }}
- name: SESSIONS_QUEUE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.queueRedisUrl }}
{{- else if .Values.settings.redisCluster }}
{{- fail "settings.redisCluster is true but secrets.keys.queueRedisUrl is empty: the queue cannot run on a Redis Cluster and needs its own standalone or Sentinel Redis" }}
{{- end }}
{{- if $keys.adminKey }}
- name: SESSIONS_ADMIN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.adminKey }}
{{- end }}
{{- if $keys.openaiApiKey }}
- name: SESSIONS_OPENAI_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.openaiApiKey }}
      optional: {{ ne .Values.settings.provider "openai" }}
{{- else if eq .Values.settings.provider "openai" }}
{{- fail "settings.provider is openai but secrets.keys.openaiApiKey is empty: name the Secret key holding the provider API key" }}
{{- end }}
{{- end }}

{{/*
All env entries of a component's container: (dict "root" $ "values" .Values.api).
*/}}
{{- define "redis-sessions.env" -}}
{{- include "redis-sessions.secretEnv" .root }}
{{- with concat .root.Values.extraEnv .values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Pod annotations: config checksums, then the global and the component's own annotations.
*/}}
{{- define "redis-sessions.podAnnotations" -}}
checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
{{- if .root.Values.secrets.create }}
checksum/secret: {{ include (print .root.Template.BasePath "/secret.yaml") .root | sha256sum }}
{{- end }}
{{- with merge (deepCopy .values.podAnnotations) .root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "redis-sessions.podLabels" -}}
{{ include "redis-sessions.labels" (dict "root" .root "component" .component) }}
{{- with merge (deepCopy .values.podLabels) .root.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Pod spec fields shared by api, worker and cleanup: (dict "root" $ "values" .Values.api
"component" "api"). Scheduling fields fall back to the global ones when the component's are empty.
*/}}
{{- define "redis-sessions.podCommon" -}}
{{- $root := .root }}
{{- $v := .values }}
serviceAccountName: {{ include "redis-sessions.serviceAccountName" $root }}
automountServiceAccountToken: {{ $root.Values.serviceAccount.automountToken }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with default $root.Values.priorityClassName $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with default $root.Values.nodeSelector $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with default $root.Values.tolerations $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with default $root.Values.affinity $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if hasKey $v "topologySpreadConstraints" }}
{{- with default $root.Values.topologySpreadConstraints $v.topologySpreadConstraints }}
{{- $constraints := list }}
{{- range . }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" (include "redis-sessions.selectorLabels" (dict "root" $root "component" $.component) | fromYaml)) }}
{{- end }}
{{- $constraints = append $constraints $c }}
{{- end }}
topologySpreadConstraints:
  {{- toYaml $constraints | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Container fields shared by api, worker and cleanup: (dict "root" $ "values" .Values.api).
*/}}
{{- define "redis-sessions.containerCommon" -}}
image: {{ include "redis-sessions.image" . | quote }}
imagePullPolicy: {{ include "redis-sessions.imagePullPolicy" . }}
envFrom:
  {{- include "redis-sessions.envFrom" .root | nindent 2 }}
env:
  {{- include "redis-sessions.env" . | trim | nindent 2 }}
securityContext:
  {{- toYaml .root.Values.securityContext | nindent 2 }}
resources:
  {{- toYaml (default .root.Values.resources .values.resources) | nindent 2 }}
{{- end }}

{{/*
/tmp is the only writable path of the read-only root filesystem.
*/}}
{{- define "redis-sessions.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end }}

{{- define "redis-sessions.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/*
Timings of a probe, from a values block such as .Values.api.livenessProbe.
*/}}
{{- define "redis-sessions.probeTimings" -}}
{{- range $key := list "initialDelaySeconds" "periodSeconds" "timeoutSeconds" "failureThreshold" "successThreshold" }}
{{- if hasKey $ $key }}
{{ $key }}: {{ get $ $key | int }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Arguments of the cleanup CronJob, from .Values.cleanup.
*/}}
{{- define "redis-sessions.cleanupCommand" -}}
{{- $c := .Values.cleanup }}
{{- $f := $c.filters }}
{{- $args := list "sessionctl" "cleanup" }}
{{- with $f.tenant }}{{ $args = concat $args (list "--tenant" .) }}{{ end }}
{{- with $f.olderThan }}{{ $args = concat $args (list "--older-than" .) }}{{ end }}
{{- with $f.idleFor }}{{ $args = concat $args (list "--idle-for" .) }}{{ end }}
{{- range $k := keys $f.labels | sortAlpha }}
{{- $args = concat $args (list "--label" (printf "%s=%s" $k (toString (get $f.labels $k)))) }}
{{- end }}
{{- if $f.includeInfinite }}{{ $args = concat $args (list "--include-infinite") }}{{ end }}
{{- if gt (int $f.limit) 0 }}{{ $args = concat $args (list "--limit" (toString (int $f.limit))) }}{{ end }}
{{- if $c.dryRun }}{{ $args = concat $args (list "--dry-run") }}{{ end }}
{{- if $c.export.enabled }}
{{- $args = concat $args (list "--export-to" $c.export.path) }}
{{- if $c.export.gzip }}{{ $args = concat $args (list "--gzip") }}{{ end }}
{{- end }}
{{- if $c.json }}{{ $args = concat $args (list "--json") }}{{ end }}
{{- toJson $args }}
{{- end }}
