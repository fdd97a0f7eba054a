{{/* Names, labels, images and the security settings every pod shares. */}}

{{- define "bfm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bfm.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "bfm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one part ("component" in the dict). */}}
{{- define "bfm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bfm.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every object's labels. */}}
{{- define "bfm.labels" -}}
{{ include "bfm.selectorLabels" . }}
helm.sh/chart: {{ include "bfm.chart" .root }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: bfm
{{- end -}}

{{- define "bfm.serviceAccountName" -}}
{{- default (include "bfm.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "bfm.imageRepository" -}}
{{- .Values.image.repository -}}
{{- end -}}

{{- define "bfm.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "bfm.otelImage" -}}
{{- $image := .Values.otel.image -}}
{{- if $image.digest -}}
{{- printf "%s:%s@%s" $image.repository $image.tag $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository $image.tag -}}
{{- end -}}
{{- end -}}

{{- define "bfm.siteName" -}}
{{- printf "%s-site-%s" (include "bfm.fullname" .root) .site -}}
{{- end -}}

{{- define "bfm.storeUrl" -}}
{{- printf "kubernetes://%s?instance=%s" .Release.Namespace .Values.store.instance -}}
{{- end -}}

{{- define "bfm.logstoreUrl" -}}
{{- printf "http://%s-logstore.%s.svc:%d" (include "bfm.fullname" .) .Release.Namespace (int .Values.logstore.port) -}}
{{- end -}}

{{- define "bfm.lokiUrl" -}}
{{- if .Values.loki.url -}}
{{- .Values.loki.url -}}
{{- else if .Values.logstore.enabled -}}
{{- include "bfm.logstoreUrl" . -}}
{{- end -}}
{{- end -}}

{{- define "bfm.heartbeatSecret" -}}
{{- default (printf "%s-heartbeat" (include "bfm.fullname" .)) .Values.site.heartbeat.existingSecret -}}
{{- end -}}

{{/* The pod-level securityContext: never root, the runtime's seccomp profile. */}}
{{- define "bfm.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsUser }}
fsGroup: {{ .Values.runAsUser }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Every container's securityContext. */}}
{{- define "bfm.containerSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "bfm.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
