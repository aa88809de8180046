{{- define "mbot-agent.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mbot-agent.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "mbot-agent.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mbot-agent.serviceAccount" -}}
{{- default (include "mbot-agent.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "mbot-agent.secretNames" -}}
{{- $names := list -}}
{{- range .Values.outputs }}{{ $names = append $names (required "every entry of outputs needs secretName" .secretName) }}{{ end -}}
{{- toJson $names -}}
{{- end -}}
