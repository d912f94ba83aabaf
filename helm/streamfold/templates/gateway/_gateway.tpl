{{/*
What the gateway reads: a topology file over every aggregate some worker group runs (a group
that names no aggregates, sagas or handlers runs them all, and so does the gateway's file
then; it runs no saga or handler either way), and a connector directory: the spec of one
sink (gateway.connector, default the first) and the named queries.
*/}}
{{- define "streamfold.gatewayTopologyFile" -}}
{{- $all := false -}}
{{- $aggregates := list -}}
{{- range .Values.workers.groups -}}
{{- if include "streamfold.groupNamesMembers" . -}}
{{- $aggregates = concat $aggregates (default list .aggregates) -}}
{{- else -}}
{{- $all = true -}}
{{- end -}}
{{- end -}}
{{- $group := dict "name" "gateway" "topologyName" .Values.topology.name -}}
{{- if not $all -}}
{{- $_ := set $group "aggregates" (uniq $aggregates) -}}
{{- end -}}
{{- include "streamfold.topologyFile" (dict "context" . "group" $group) -}}
{{- end -}}

{{/*
The sink whose connector spec the gateway reads, as YAML ("{}" without sinks).
*/}}
{{- define "streamfold.gatewaySink" -}}
{{- $chosen := dict -}}
{{- range .Values.sinks -}}
{{- if and (not $chosen) (or (not $.Values.gateway.connector) (eq .name $.Values.gateway.connector)) -}}
{{- $chosen = . -}}
{{- end -}}
{{- end -}}
{{- toYaml $chosen -}}
{{- end -}}

{{/*
The files of the connector directory: ConfigMap keys to their paths under it.
*/}}
{{- define "streamfold.gatewayConnectorItems" -}}
{{- $sink := include "streamfold.gatewaySink" . | fromYaml -}}
{{- if $sink }}
- key: sink.yaml
  path: sink.yaml
{{- end }}
{{- range $name, $_ := .Values.gateway.queries }}
- key: {{ printf "%s.sql" $name }}
  path: {{ printf "queries/%s.sql" $name }}
{{- end }}
{{- end -}}
