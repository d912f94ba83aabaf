{{/*
A worker group's topology file (see streamfold.runtime.topology). Its worker settings come
from the environment, so it has no worker section. A group that names any of aggregates,
sagas and handlers gets all three lists, [] for the ones it leaves out: the file runs exactly
what the group names (a list left out of a topology file would fall back to the context's
defaults). A group that names none of them runs everything of the context.
*/}}
{{- define "streamfold.topologyFile" -}}
{{- $topology := .context.Values.topology -}}
{{- $group := .group -}}
name: {{ default (printf "%s.%s" $topology.name $group.name) $group.topologyName }}
context: {{ $topology.context }}
{{- if include "streamfold.groupNamesMembers" $group }}
{{- range $kind := list "aggregates" "sagas" "handlers" }}
{{- $names := get $group $kind | default list }}
{{- if $names }}
{{ $kind }}:
  {{- toYaml $names | nindent 2 }}
{{- else }}
{{ $kind }}: []
{{- end }}
{{- end }}
{{- end }}
topics:
  partitions: {{ int $topology.partitions }}
  {{- if $topology.replicationFactor }}
  replication_factor: {{ int $topology.replicationFactor }}
  {{- end }}
{{- end -}}

{{/*
"true" when a worker group names any of aggregates, sagas and handlers (else it runs
everything of the context), "" otherwise.
*/}}
{{- define "streamfold.groupNamesMembers" -}}
{{- if or (hasKey . "aggregates") (hasKey . "sagas") (hasKey . "handlers") -}}
true
{{- end -}}
{{- end -}}

{{/*
"true" when a worker group keeps local state: it runs aggregates or sagas (their stores on
the group's claims), or names nothing and so runs everything. A group of event handlers
only keeps none: its pods keep stable names (their transactional ids) but no claims.
*/}}
{{- define "streamfold.groupStateful" -}}
{{- if or (not (include "streamfold.groupNamesMembers" .)) .aggregates .sagas -}}
true
{{- end -}}
{{- end -}}
