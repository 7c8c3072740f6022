{{/*
Names are fixed, not derived from the release name: the operator binds the owner ClusterRole by
name and the admission policies are cluster-wide, so a cluster holds one installation.
*/}}

{{- define "spacesecrets.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: spacesecrets
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: spacesecrets
{{- end }}

{{- define "spacesecrets.selectorLabels" -}}
app.kubernetes.io/name: spacesecrets
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "spacesecrets.serviceAccountName" -}}
{{ .Values.serviceAccount.name }}
{{- end }}

{{- define "spacesecrets.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/*
The address /metrics listens on, and whether it is a loopback address (metrics kept inside the
pod: no Service, no ServiceMonitor, no metrics container port, no NetworkPolicy rule for it).
*/}}
{{- define "spacesecrets.metricsAddress" -}}
{{ .Values.metrics.bindAddress | default "0.0.0.0" }}
{{- end }}

{{- define "spacesecrets.metricsInPod" -}}
{{- if has (include "spacesecrets.metricsAddress" .) (list "127.0.0.1" "::1") -}}
true
{{- end -}}
{{- end }}
