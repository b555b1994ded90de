{{/*
Names and labels shared by every template. Names are cut to 63 characters because
Kubernetes labels (and so names used as label values) allow no more.
*/}}

{{- define "modelrollout-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release name alone when it already says what this is ("modelrollout-operator",
"mro-operator-prod"), so `helm install modelrollout-operator .` does not yield
"modelrollout-operator-modelrollout-operator".
*/}}
{{- define "modelrollout-operator.fullname" -}}
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

{{- define "modelrollout-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels never change after install: a Deployment's selector is immutable. */}}
{{- define "modelrollout-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelrollout-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "modelrollout-operator.labels" -}}
helm.sh/chart: {{ include "modelrollout-operator.chart" . }}
{{ include "modelrollout-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelrollout
{{- end }}

{{- define "modelrollout-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelrollout-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "modelrollout-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "modelrollout-operator.metricsServiceName" -}}
{{- printf "%s-metrics" (include "modelrollout-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}


{{/* The Lease of leaderElection mode. */}}
{{- define "modelrollout-operator.leaseName" -}}
{{- .Values.highAvailability.leaseName | default (include "modelrollout-operator.fullname" .) -}}
{{- end -}}
