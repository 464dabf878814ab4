{{/*
HorizontalPodAutoscaler of a Deployment: (dict "root" $ "values" .Values.api "component" "api").
*/}}
{{- define "redis-sessions.hpa" -}}
{{- $a := .values.autoscaling }}
{{- $name := include "redis-sessions.componentName" . }}
{{- if and (not $a.targetCPUUtilizationPercentage) (not $a.targetMemoryUtilizationPercentage) }}
{{- fail (printf "%s.autoscaling: set targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" .component) }}
{{- end }}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) }}
{{- fail (printf "%s.autoscaling: minReplicas (%d) is above maxReplicas (%d)" .component (int $a.minReplicas) (int $a.maxReplicas)) }}
{{- end }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  labels:
    {{- include "redis-sessions.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    {{- if $a.targetCPUUtilizationPercentage }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $a.targetCPUUtilizationPercentage }}
    {{- end }}
    {{- if $a.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ $a.targetMemoryUtilizationPercentage }}
    {{- end }}
  {{- with $a.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
PodDisruptionBudget of a Deployment: (dict "root" $ "values" .Values.api "component" "api").
*/}}
{{- define "redis-sessions.pdb" -}}
{{- $p := .values.pdb }}
{{- $min := toString $p.minAvailable }}
{{- $max := toString $p.maxUnavailable }}
{{- if and $min $max }}
{{- fail (printf "%s.pdb: set minAvailable or maxUnavailable, not both" .component) }}
{{- end }}
{{- if not (or $min $max) }}
{{- fail (printf "%s.pdb: set minAvailable or maxUnavailable" .component) }}
{{- end }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "redis-sessions.componentName" . }}
  labels:
    {{- include "redis-sessions.labels" . | nindent 4 }}
spec:
  {{- if $min }}
  minAvailable: {{ if hasSuffix "%" $min }}{{ $min | quote }}{{ else }}{{ $min | int }}{{ end }}
  {{- else }}
  maxUnavailable: {{ if hasSuffix "%" $max }}{{ $max | quote }}{{ else }}{{ $max | int }}{{ end }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "redis-sessions.selectorLabels" . | nindent 6 }}
{{- end }}
