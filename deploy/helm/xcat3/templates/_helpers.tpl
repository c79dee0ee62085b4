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
{{- include "xcat3.etcdEnv" . }}
- name: XCAT3_SHARDS
  value: {{ .Values.shards | quote }}
- name: HOME
  value: /tmp
{{- end -}}

{{/* The key that seals stored secrets (and the previous one during a rotation). */}}
{{- define "xcat3.secretsKeyEnv" -}}
{{- with .Values.secretsEncryption }}
{{- if .existingSecret }}
- name: XCAT3_SECRETS_KEY_FILE
  value: /etc/xcat3/secrets-key/current
{{- if .rotating }}
- name: XCAT3_SECRETS_PREVIOUS_KEY_FILES
  value: /etc/xcat3/secrets-key/previous
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* etcd credentials and CA, when configured. */}}
{{- define "xcat3.etcdEnv" -}}
{{- with .Values.etcd.auth.existingSecret }}
- name: XCAT3_ETCD_USER
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: username}
- name: XCAT3_ETCD_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: password}
{{- end }}
{{- if .Values.etcd.tls.secretName }}
- name: XCAT3_ETCD_CA
  value: /etc/xcat3/etcd-tls/ca.crt
{{- end }}
{{- end -}}

{{/* "https" with TLS on, else "http": the scheme of every gRPC URL. */}}
{{- define "xcat3.grpcScheme" -}}
{{ if .Values.tls.enabled }}https{{ else }}http{{ end }}
{{- end -}}

{{/* TLS files for a gRPC service; `clientCa` (mutual TLS) for the internal ones. */}}
{{- define "xcat3.tlsEnv" -}}
{{- if .root.Values.tls.enabled }}
- name: XCAT3_TLS_CERT
  value: /etc/xcat3/tls/tls.crt
- name: XCAT3_TLS_KEY
  value: /etc/xcat3/tls/tls.key
- name: XCAT3_TLS_CA
  value: /etc/xcat3/tls/ca.crt
{{- if .clientCa }}
- name: XCAT3_TLS_CLIENT_CA
  value: /etc/xcat3/tls/ca.crt
{{- end }}
{{- end }}
{{- end -}}

{{/* Files from Secrets: TLS, etcd's CA, the secrets key. */}}
{{- define "xcat3.secretFileMounts" -}}
{{- if .Values.secretsEncryption.existingSecret }}
- {name: secrets-key, mountPath: /etc/xcat3/secrets-key, readOnly: true}
{{- end }}
{{- if .Values.tls.enabled }}
- {name: tls, mountPath: /etc/xcat3/tls, readOnly: true}
{{- end }}
{{- if .Values.etcd.tls.secretName }}
- {name: etcd-tls, mountPath: /etc/xcat3/etcd-tls, readOnly: true}
{{- end }}
{{- end -}}

{{- define "xcat3.secretFileVolumes" -}}
{{- with .Values.secretsEncryption }}
{{- if .existingSecret }}
- name: secrets-key
  secret:
    secretName: {{ .existingSecret }}
    defaultMode: 0400
    items:
      - {key: secrets-key, path: current}
      {{- if .rotating }}
      - {key: previous-key, path: previous}
      {{- end }}
{{- end }}
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  secret: {secretName: {{ required "tls.secretName is required with tls.enabled" .Values.tls.secretName }}, defaultMode: 0400}
{{- end }}
{{- if .Values.etcd.tls.secretName }}
- name: etcd-tls
  secret: {secretName: {{ .Values.etcd.tls.secretName }}, defaultMode: 0400}
{{- end }}
{{- end -}}

{{/* A probe of a gRPC port: the gRPC health check, or a TCP check with TLS (the kubelet's gRPC
probe speaks plaintext only). */}}
{{- define "xcat3.grpcProbe" -}}
{{- if .root.Values.tls.enabled -}}
tcpSocket: {port: {{ .port }}}
{{- else if .service -}}
grpc: {port: {{ .port }}, service: {{ .service }}}
{{- else -}}
grpc: {port: {{ .port }}}
{{- end }}
{{- end -}}
