{{/*
Names, labels and the environment shared by the workloads.
*/}}

{{- define "streamfold.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The full name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "streamfold.fullname" -}}
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
{{- end -}}

{{- define "streamfold.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "streamfold.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Standard labels. Call with (dict "context" $ "component" "worker").
*/}}
{{- define "streamfold.labels" -}}
helm.sh/chart: {{ include "streamfold.chart" .context }}
{{ include "streamfold.matchLabels" . }}
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
app.kubernetes.io/part-of: streamfold
{{- with .context.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Labels that select a workload's pods: they never change for a release (a selector is
immutable), so nothing that changes between versions belongs here.
*/}}
{{- define "streamfold.matchLabels" -}}
app.kubernetes.io/name: {{ include "streamfold.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- with .workload }}
streamfold.io/workload: {{ . }}
{{- end }}
{{- end -}}

{{/*
A workload's name: the full name and a suffix, short enough for a StatefulSet (whose
controller-revision-hash label appends 11 characters to the name, within 63).
*/}}
{{- define "streamfold.workloadName" -}}
{{- printf "%s-%s" (include "streamfold.fullname" .context) .suffix | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "streamfold.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- $repository := .Values.image.repository -}}
{{- if .Values.image.registry -}}
{{- $repository = printf "%s/%s" .Values.image.registry .Values.image.repository -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "streamfold.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "streamfold.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "streamfold.secretName" -}}
{{- include "streamfold.fullname" . -}}
{{- end -}}

{{/*
Render a setting's value as an environment variable's string: a list as JSON (as
pydantic-settings reads it), whole numbers without an exponent (values files give every
number as a float), everything else as is.
*/}}
{{- define "streamfold.envValue" -}}
{{- if kindIs "slice" . -}}
{{- toJson . | quote -}}
{{- else if and (kindIs "float64" .) (eq (float64 (int64 .)) .) -}}
{{- int64 . | toString | quote -}}
{{- else -}}
{{- toString . | quote -}}
{{- end -}}
{{- end -}}

{{/*
A secret as an environment variable. Call with (dict "context" $ "name" "ENV" "existingSecret"
"..." "key" "..." "value" "...")): from existingSecret when set, else from the chart's Secret
when a value is given, else nothing.
*/}}
{{- define "streamfold.secretEnv" -}}
{{- if .existingSecret }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ tpl .existingSecret .context }}
      key: {{ .key }}
{{- else if .value }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "streamfold.secretName" .context }}
      key: {{ .key }}
{{- end }}
{{- end -}}

{{/*
STREAMFOLD_LOG_* and STREAMFOLD_KAFKA_*: read by every process.
*/}}
{{- define "streamfold.commonEnv" -}}
- name: STREAMFOLD_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
- name: STREAMFOLD_LOG_LEVEL
  value: {{ .Values.log.level | quote }}
- name: STREAMFOLD_KAFKA_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: STREAMFOLD_KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
- name: STREAMFOLD_KAFKA_CLIENT_ID
  value: {{ .Values.kafka.clientId | quote }}
{{- with .Values.kafka.sasl }}
{{- if .mechanism }}
- name: STREAMFOLD_KAFKA_SASL_MECHANISM
  value: {{ .mechanism | quote }}
{{- end }}
{{- if .username }}
- name: STREAMFOLD_KAFKA_SASL_USERNAME
  value: {{ .username | quote }}
{{- end }}
{{- end }}
{{- include "streamfold.secretEnv" (dict "context" . "name" "STREAMFOLD_KAFKA_SASL_PASSWORD" "existingSecret" .Values.kafka.sasl.existingSecret "key" (ternary .Values.kafka.sasl.existingSecretPasswordKey "kafka-sasl-password" (ne .Values.kafka.sasl.existingSecret "")) "value" .Values.kafka.sasl.password) }}
{{- with .Values.kafka.tls }}
{{- if .existingSecret }}
{{- if .caFilename }}
- name: STREAMFOLD_KAFKA_SSL_CA_LOCATION
  value: {{ printf "/etc/streamfold/kafka-tls/%s" .caFilename | quote }}
{{- end }}
{{- if .certFilename }}
- name: STREAMFOLD_KAFKA_SSL_CERTIFICATE_LOCATION
  value: {{ printf "/etc/streamfold/kafka-tls/%s" .certFilename | quote }}
{{- end }}
{{- if .keyFilename }}
- name: STREAMFOLD_KAFKA_SSL_KEY_LOCATION
  value: {{ printf "/etc/streamfold/kafka-tls/%s" .keyFilename | quote }}
{{- end }}
{{- if .keyPasswordKey }}
- name: STREAMFOLD_KAFKA_SSL_KEY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .keyPasswordKey }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
STREAMFOLD_REGISTRY_*: how workers, sinks and gateways reach the schema registry.
*/}}
{{- define "streamfold.registryUrl" -}}
{{- if .Values.registryClient.url -}}
{{- .Values.registryClient.url -}}
{{- else -}}
{{- printf "http://%s:%d" (include "streamfold.workloadName" (dict "context" . "suffix" "registry")) (int .Values.registry.service.port) -}}
{{- end -}}
{{- end -}}

{{- define "streamfold.registryClientEnv" -}}
- name: STREAMFOLD_REGISTRY_URL
  value: {{ include "streamfold.registryUrl" . | quote }}
- name: STREAMFOLD_REGISTRY_TIMEOUT_S
  value: {{ include "streamfold.envValue" .Values.registryClient.timeoutSeconds }}
{{- if .Values.registryClient.username }}
- name: STREAMFOLD_REGISTRY_USERNAME
  value: {{ .Values.registryClient.username | quote }}
{{- end }}
{{- include "streamfold.secretEnv" (dict "context" . "name" "STREAMFOLD_REGISTRY_PASSWORD" "existingSecret" .Values.registryClient.existingSecret "key" (ternary .Values.registryClient.existingSecretPasswordKey "registry-password" (ne .Values.registryClient.existingSecret "")) "value" .Values.registryClient.password) }}
{{- end -}}

{{/*
STREAMFOLD_TRACING_*: read by the workers and the gateway (spans only with an OTLP endpoint).
*/}}
{{- define "streamfold.tracingEnv" -}}
{{- if .Values.tracing.otlpEndpoint }}
- name: STREAMFOLD_TRACING_OTLP_ENDPOINT
  value: {{ .Values.tracing.otlpEndpoint | quote }}
{{- end }}
- name: STREAMFOLD_TRACING_SAMPLE_RATIO
  value: {{ include "streamfold.envValue" .Values.tracing.sampleRatio }}
{{- end -}}

{{/*
Settings as STREAMFOLD_<PREFIX><KEY> variables, a nested mapping as <KEY>__<NESTED KEY>.
Call with (dict "prefix" "STREAMFOLD_WORKER_" "settings" $map); null values are skipped.
*/}}
{{- define "streamfold.settingsEnv" -}}
{{- $prefix := .prefix -}}
{{- range $key, $value := .settings }}
{{- if kindIs "map" $value }}
{{- range $nested, $nestedValue := $value }}
{{- if not (kindIs "invalid" $nestedValue) }}
- name: {{ printf "%s%s__%s" $prefix (upper $key) (upper $nested) }}
  value: {{ include "streamfold.envValue" $nestedValue }}
{{- end }}
{{- end }}
{{- else if not (kindIs "invalid" $value) }}
- name: {{ printf "%s%s" $prefix (upper $key) }}
  value: {{ include "streamfold.envValue" $value }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "streamfold.kafkaTlsVolumeMount" -}}
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/streamfold/kafka-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "streamfold.kafkaTlsVolume" -}}
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "streamfold.metricsAnnotations" -}}
{{- if .context.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{- define "streamfold.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Combinations of values the schema cannot express; each message names what to set.
*/}}
{{- define "streamfold.validateValues" -}}
{{- $kafka := .Values.kafka -}}
{{- if hasPrefix "SASL_" $kafka.securityProtocol -}}
{{- if not (and $kafka.sasl.mechanism $kafka.sasl.username (or $kafka.sasl.password $kafka.sasl.existingSecret)) -}}
{{- fail (printf "kafka.securityProtocol %s needs kafka.sasl.mechanism, kafka.sasl.username and kafka.sasl.password or kafka.sasl.existingSecret" $kafka.securityProtocol) -}}
{{- end -}}
{{- end -}}
{{- if ne (empty $kafka.tls.certFilename) (empty $kafka.tls.keyFilename) -}}
{{- fail "kafka.tls.certFilename and kafka.tls.keyFilename go together" -}}
{{- end -}}
{{- if and (not $kafka.tls.existingSecret) (or $kafka.tls.certFilename $kafka.tls.keyFilename $kafka.tls.keyPasswordKey) -}}
{{- fail "kafka.tls.certFilename, keyFilename and keyPasswordKey are files of kafka.tls.existingSecret: set it" -}}
{{- end -}}
{{- if and (not .Values.registry.enabled) (not .Values.registryClient.url) -}}
{{- fail "registry.enabled is false: set registryClient.url to your schema registry" -}}
{{- end -}}
{{- $seen := dict -}}
{{- $placed := dict -}}
{{- $groups := .Values.workers.groups -}}
{{- range $groups -}}
{{- if hasKey $seen .name -}}
{{- fail (printf "workers.groups: the name %q is used twice" .name) -}}
{{- end -}}
{{- $_ := set $seen .name true -}}
{{- $group := . -}}
{{- if include "streamfold.groupNamesMembers" $group -}}
{{- if not (or $group.aggregates $group.sagas $group.handlers) -}}
{{- fail (printf "workers.groups: group %q runs nothing: list its aggregates, sagas or handlers (or leave all three out to run everything of the topology's context)" $group.name) -}}
{{- end -}}
{{- range $kind := list "aggregates" "sagas" "handlers" -}}
{{- range $member := (get $group $kind | default list) -}}
{{- $key := printf "%s %s" $kind $member -}}
{{- if hasKey $placed $key -}}
{{- fail (printf "workers.groups: %s %q is in groups %q and %q: put it in one" (trimSuffix "s" $kind) $member (get $placed $key) $group.name) -}}
{{- end -}}
{{- $_ := set $placed $key $group.name -}}
{{- end -}}
{{- end -}}
{{- else if gt (len $groups) 1 -}}
{{- fail (printf "workers.groups: group %q names no aggregates, sagas or handlers, so it runs everything, as another group does: list what each group runs" $group.name) -}}
{{- end -}}
{{- end -}}
{{- $sinks := dict -}}
{{- range .Values.sinks -}}
{{- if hasKey $sinks .name -}}
{{- fail (printf "sinks: the name %q is used twice" .name) -}}
{{- end -}}
{{- $_ := set $sinks .name true -}}
{{- end -}}
{{- with .Values.gateway -}}
{{- if .enabled -}}
{{- if and .connector (not (hasKey $sinks .connector)) -}}
{{- fail (printf "gateway.connector %q is not the name of a sink in sinks" .connector) -}}
{{- end -}}
{{- $mode := .auth.mode | toString -}}
{{- if and (ne $mode "off") (not .auth.existingSecret) -}}
{{- fail (printf "gateway.auth.mode %s needs gateway.auth.existingSecret: the Secret holding the gateway's %s" $mode (ternary "API keys (key gateway.auth.apiKeysKey)" "JWT public key or HMAC secret (keys gateway.auth.jwtPublicKeyKey, gateway.auth.jwtSecretKey)" (eq $mode "api_key"))) -}}
{{- end -}}
{{- if and (eq $mode "api_key") (not .auth.apiKeysKey) -}}
{{- fail "gateway.auth.mode api_key needs gateway.auth.apiKeysKey: the key of the API keys file in gateway.auth.existingSecret" -}}
{{- end -}}
{{- if and (eq $mode "jwt") (not (or .auth.jwtPublicKeyKey .auth.jwtSecretKey)) -}}
{{- fail "gateway.auth.mode jwt needs gateway.auth.jwtPublicKeyKey (RS256/ES256) or gateway.auth.jwtSecretKey (HS256): a key of gateway.auth.existingSecret" -}}
{{- end -}}
{{- if and .autoscaling.enabled (gt (int .autoscaling.minReplicas) (int .autoscaling.maxReplicas)) -}}
{{- fail "gateway.autoscaling.minReplicas is above gateway.autoscaling.maxReplicas" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
