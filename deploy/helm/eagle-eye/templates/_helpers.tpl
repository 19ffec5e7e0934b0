{{/* Names ------------------------------------------------------------------------------------------------------ */}}

{{- define "eagle-eye.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{- define "eagle-eye.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* <fullname>-<component>, within the 63 characters of a DNS label. Call with (dict "ctx" $ "component" "x"). */}}
{{- define "eagle-eye.componentName" -}}
{{- printf "%s-%s" (include "eagle-eye.fullname" .ctx | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component -}}
{{- end }}

{{/* Labels ----------------------------------------------------------------------------------------------------- */}}

{{- define "eagle-eye.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eagle-eye.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "eagle-eye.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "eagle-eye.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: eagle-eye
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Images: (dict "image" .Values.x.image "default" tag). A digest pins the image. ------------------------------ */}}

{{- define "eagle-eye.imageRef" -}}
{{- $repository := .image.repository -}}
{{- if .image.registry -}}
{{- $repository = printf "%s/%s" .image.registry .image.repository -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (toString (default .default .image.tag)) -}}
{{- end -}}
{{- end }}

{{- define "eagle-eye.image" -}}
{{- include "eagle-eye.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) -}}
{{- end }}

{{/* Security --------------------------------------------------------------------------------------------------- */}}

{{/* The container security context of every container that needs nothing from the host. */}}
{{- define "eagle-eye.restrictedContainerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* NATS ------------------------------------------------------------------------------------------------------- */}}

{{- define "eagle-eye.natsServiceName" -}}
{{- include "eagle-eye.componentName" (dict "ctx" . "component" "nats") -}}
{{- end }}

{{/* The URL every client connects to: the bundled server's Service, or nats.url. */}}
{{- define "eagle-eye.natsUrl" -}}
{{- if .Values.nats.bundled.enabled -}}
{{- printf "nats://%s.%s.svc:%d" (include "eagle-eye.natsServiceName" .) .Release.Namespace (int .Values.nats.bundled.port) -}}
{{- else -}}
{{- required "nats.url is required when nats.bundled.enabled is false: the URL of the NATS server every Eagle Eye component connects to" .Values.nats.url -}}
{{- end -}}
{{- end }}

{{/* Refuse combinations that cannot work, with a message that says what to change. */}}
{{- define "eagle-eye.validate" -}}
{{- $auth := .Values.nats.auth -}}
{{- $methods := 0 -}}
{{- if $auth.tokenKey }}{{ $methods = add1 $methods }}{{ end -}}
{{- if or $auth.userKey $auth.passwordKey }}{{ $methods = add1 $methods }}{{ end -}}
{{- if $auth.credsKey }}{{ $methods = add1 $methods }}{{ end -}}
{{- if gt (int $methods) 1 -}}
{{- fail "nats.auth: set only one of tokenKey, userKey+passwordKey or credsKey" -}}
{{- end -}}
{{- if and (gt (int $methods) 0) (not $auth.existingSecret) -}}
{{- fail "nats.auth: a key is set but nats.auth.existingSecret (the Secret holding it) is empty" -}}
{{- end -}}
{{- if and $auth.existingSecret (eq (int $methods) 0) -}}
{{- fail "nats.auth.existingSecret is set: also set the key of the method it holds (tokenKey, userKey+passwordKey or credsKey)" -}}
{{- end -}}
{{- if $auth.perComponent.enabled -}}
{{- if gt (int $methods) 0 -}}
{{- fail "nats.auth.perComponent is enabled: leave tokenKey, userKey, passwordKey and credsKey empty (one method at a time)" -}}
{{- end -}}
{{- if not $auth.perComponent.existingSecret -}}
{{- fail "nats.auth.perComponent.existingSecret is required: the Secret holding one password per component" -}}
{{- end -}}
{{- end -}}
{{- if ne (empty $auth.userKey) (empty $auth.passwordKey) -}}
{{- fail "nats.auth: userKey and passwordKey go together" -}}
{{- end -}}
{{- if ne (empty .Values.nats.tls.certKey) (empty .Values.nats.tls.keyKey) -}}
{{- fail "nats.tls: certKey and keyKey go together (a client certificate and its key)" -}}
{{- end -}}
{{- if .Values.nats.bundled.enabled -}}
{{- if .Values.nats.url -}}
{{- fail "nats.url is set but nats.bundled.enabled is true: set nats.bundled.enabled=false to use an existing NATS" -}}
{{- end -}}
{{- if $auth.credsKey -}}
{{- fail "nats.auth.credsKey (JWT credentials) needs an operator-mode NATS: use an existing NATS (nats.bundled.enabled=false)" -}}
{{- end -}}
{{- if .Values.nats.tls.existingSecret -}}
{{- fail "nats.tls is for an existing NATS: the bundled server listens without TLS inside the cluster" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.hardwareMonitor.enabled (not (or .Values.hardwareMonitor.gpu.enabled .Values.hardwareMonitor.npu.enabled)) -}}
{{- fail "hardwareMonitor.enabled is true but neither hardwareMonitor.gpu.enabled nor hardwareMonitor.npu.enabled is" -}}
{{- end -}}
{{- end }}

{{/* Env of a NATS client, called with (dict "ctx" $ "user" "hardware"): the URL, then the credentials and the TLS
files. Secrets reach the process as files of the mounted Secret (EAGLEEYE_NATS_*_FILE), never as environment
values; with nats.auth.perComponent the component logs in as eagle-eye-<user> (deploy/nats/eagle-eye-auth.conf). */}}
{{- define "eagle-eye.natsEnv" -}}
{{- $values := .ctx.Values -}}
- name: EAGLEEYE_NATS_URL
  value: {{ include "eagle-eye.natsUrl" .ctx | quote }}
{{- if $values.nats.auth.perComponent.enabled }}
- name: EAGLEEYE_NATS_USER
  value: {{ printf "eagle-eye-%s" .user | quote }}
- name: EAGLEEYE_NATS_PASSWORD_FILE
  value: /etc/eagle-eye/nats-auth/password
{{- end }}
{{- with $values.nats.auth }}
{{- if .tokenKey }}
- name: EAGLEEYE_NATS_TOKEN_FILE
  value: /etc/eagle-eye/nats-auth/token
{{- end }}
{{- if .userKey }}
- name: EAGLEEYE_NATS_USER
  valueFrom:
    secretKeyRef: {name: {{ .existingSecret | quote }}, key: {{ .userKey | quote }}}
- name: EAGLEEYE_NATS_PASSWORD_FILE
  value: /etc/eagle-eye/nats-auth/password
{{- end }}
{{- if .credsKey }}
- name: EAGLEEYE_NATS_CREDS
  value: /etc/eagle-eye/nats-auth/{{ .credsKey }}
{{- end }}
{{- end }}
{{- with $values.nats.tls }}
{{- if .existingSecret }}
- name: EAGLEEYE_NATS_TLS_CA
  value: /etc/eagle-eye/nats-tls/{{ .caKey }}
{{- if .certKey }}
- name: EAGLEEYE_NATS_TLS_CERT
  value: /etc/eagle-eye/nats-tls/{{ .certKey }}
- name: EAGLEEYE_NATS_TLS_KEY
  value: /etc/eagle-eye/nats-tls/{{ .keyKey }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Whether a client mounts the nats-auth Secret: (dict "ctx" $ "user" "x"). */}}
{{- define "eagle-eye.natsAuthMounted" -}}
{{- $auth := .ctx.Values.nats.auth -}}
{{- if or $auth.perComponent.enabled $auth.tokenKey $auth.passwordKey $auth.credsKey }}true{{ end -}}
{{- end }}

{{- define "eagle-eye.natsVolumeMounts" -}}
{{- if include "eagle-eye.natsAuthMounted" . }}
- name: nats-auth
  mountPath: /etc/eagle-eye/nats-auth
  readOnly: true
{{- end }}
{{- if .ctx.Values.nats.tls.existingSecret }}
- name: nats-tls
  mountPath: /etc/eagle-eye/nats-tls
  readOnly: true
{{- end }}
{{- end }}

{{/* Only the keys a component needs, under fixed names; group-readable, for the pod's fsGroup. */}}
{{- define "eagle-eye.natsVolumes" -}}
{{- $auth := .ctx.Values.nats.auth -}}
{{- if include "eagle-eye.natsAuthMounted" . }}
- name: nats-auth
  secret:
    {{- if $auth.perComponent.enabled }}
    secretName: {{ $auth.perComponent.existingSecret | quote }}
    defaultMode: 0440
    items:
      - {key: {{ get $auth.perComponent.keys .user | quote }}, path: password}
    {{- else }}
    secretName: {{ $auth.existingSecret | quote }}
    defaultMode: 0440
    items:
      {{- if $auth.tokenKey }}
      - {key: {{ $auth.tokenKey | quote }}, path: token}
      {{- end }}
      {{- if $auth.passwordKey }}
      - {key: {{ $auth.passwordKey | quote }}, path: password}
      {{- end }}
      {{- if $auth.credsKey }}
      - {key: {{ $auth.credsKey | quote }}, path: {{ $auth.credsKey | quote }}}
      {{- end }}
    {{- end }}
{{- end }}
{{- if .ctx.Values.nats.tls.existingSecret }}
- name: nats-tls
  secret:
    secretName: {{ .ctx.Values.nats.tls.existingSecret | quote }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* The bundled nats-server's configuration: the per-component users of files/nats/eagle-eye-auth.conf (a copy of
deploy/nats/eagle-eye-auth.conf) with the release's subjects, or one token or user. */}}
{{- define "eagle-eye.natsServerConfig" -}}
{{- $auth := .Values.nats.auth -}}
# Written by the Eagle Eye chart; ports and the server name are arguments.
{{- if $auth.perComponent.enabled }}
{{ .Files.Get "files/nats/eagle-eye-auth.conf"
  | replace "\"eagle_eye.routing_metrics\"" (quote .Values.routing.subject)
  | replace "\"eagle_eye.routing_snapshot\"" (quote .Values.routing.snapshotSubject)
  | replace "\"eagle_eye.hardware.>\"" (quote (printf "%s.>" .Values.subjects.hardwarePrefix))
  | replace "\"eagle_eye.diagnosis.>\"" (quote (printf "%s.>" .Values.subjects.diagnosisPrefix)) }}
{{- else if $auth.tokenKey }}
authorization {
  token: $NATS_TOKEN
}
{{- else if $auth.userKey }}
authorization {
  user: $NATS_USER
  password: $NATS_PASSWORD
}
{{- end }}
{{- end }}

{{/* Env every Eagle Eye process shares: subjects and resource attributes. */}}
{{- define "eagle-eye.commonEnv" -}}
- name: EAGLEEYE_HARDWARE_SUBJECT_PREFIX
  value: {{ .Values.subjects.hardwarePrefix | quote }}
{{- with .Values.resourceAttributes }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ include "eagle-eye.resourceAttributes" . | quote }}
{{- end }}
{{- end }}

{{- define "eagle-eye.resourceAttributes" -}}
{{- $pairs := list -}}
{{- range $key, $value := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $key (toString $value)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end }}

{{/* prometheus.io annotations of a pod serving metrics on (dict "ctx" $ "port" N). */}}
{{- define "eagle-eye.scrapeAnnotations" -}}
{{- if .ctx.Values.prometheus.annotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}
