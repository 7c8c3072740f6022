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
