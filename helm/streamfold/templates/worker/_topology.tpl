{{/*
A worker group's topology file (see streamfold.runtime.topology). Its worker settings come
from the environment, so it has no worker section.
*/}}
{{- define "streamfold.topologyFile" -}}
{{- $topology := .context.Values.topology -}}
name: {{ default (printf "%s.%s" $topology.name .group.name) .group.topologyName }}
context: {{ $topology.context }}
{{- with .group.aggregates }}
aggregates:
  {{- toYaml . | nindent 2 }}
{{- end }}
topics:
  partitions: {{ int $topology.partitions }}
  {{- if $topology.replicationFactor }}
  replication_factor: {{ int $topology.replicationFactor }}
  {{- end }}
{{- end -}}
