{{- define "xcat3.fullname" -}}
{{- printf "%s-xcat3" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "xcat3.labels" -}}
app.kubernetes.io/name: xcat3
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "xcat3.selector" -}}
app.kubernetes.io/name: xcat3
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "xcat3.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "xcat3.authSecret" -}}
{{ .Values.auth.existingSecret | default (printf "%s-auth" (include "xcat3.fullname" .)) }}
{{- end -}}

{{- define "xcat3.dbSecret" -}}
{{ .Values.postgresql.existingSecret | default (printf "%s-db" (include "xcat3.fullname" .)) }}
{{- end -}}

{{- define "xcat3.etcdEndpoints" -}}
{{- if .Values.etcd.endpoints -}}
{{ join "," .Values.etcd.endpoints }}
{{- else -}}
{{ printf "http://%s-etcd:2379" (include "xcat3.fullname" .) }}
{{- end -}}
{{- end -}}

{{/* Container hardening shared by every workload. */}}
{{- define "xcat3.containerSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* Environment every xcat3 service needs: tokens and the database, from Secrets only. */}}
{{- define "xcat3.commonEnv" -}}
- name: XCAT3_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "xcat3.authSecret" . }}
      key: admin-token
- name: XCAT3_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "xcat3.dbSecret" . }}
      key: url
- name: XCAT3_ETCD_ENDPOINTS
  value: {{ include "xcat3.etcdEndpoints" . | quote }}
- name: XCAT3_SHARDS
  value: {{ .Values.shards | quote }}
- name: HOME
  value: /tmp
{{- end -}}
