{{- define "mbot-authority.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mbot-authority.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "mbot-authority.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mbot-authority.serviceAccount" -}}
{{- default (include "mbot-authority.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The KEK is checked first: on PostgreSQL the authority refuses to start without one. */}}
{{- define "mbot-authority.required" -}}
{{- $_ := required "kek.secretName is required: the Secret holding the key-encryption key that seals the CA keys in PostgreSQL (kubectl create secret generic mbot-kek --from-literal=kek=$(openssl rand -hex 32)); the authority refuses to start on PostgreSQL without one" .Values.kek.secretName -}}
{{- $_ := required "storage.dsnSecretName is required: the Secret holding the PostgreSQL connection string (kubectl create secret generic mbot-dsn --from-literal=dsn=postgres://...)" .Values.storage.dsnSecretName -}}
{{- $_ := required "clusterName is required: the authority's cluster_name" .Values.clusterName -}}
{{- end -}}
