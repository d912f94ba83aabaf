"""Sinks: projections of a context's topics into ClickHouse.

The modules, from the types up:

- ``types``: the one Avro-to-ClickHouse type table (column type, value converter, ``file()``
  input type, JSON spelling, Arrow type) and the mapping rules built on it;
- ``ddl``: the projection tables of a context (the catalogue) and their SQL;
- ``rows`` (the Python path), ``passthrough`` (the framed path: ClickHouse decodes the Avro)
  and ``arrow`` (the insert format): a record to the rows of its tables;
- ``batches`` and ``progress``: the batches a sink makes durable, their intents, and whether
  a sink has caught up;
- ``target``: the ClickHouse side (chDB or a server over HTTP);
- ``sources``: a source topic of the sink and how a batch's rows reach a table (framed or
  decoded in Python);
- ``connector``: the sink's loop; ``process``: the sink as a process; ``spec``: its YAML;
- ``queries`` (the query port), ``named_queries`` (the checked-in SQL of reports and the
  API) and ``rebuild`` (a table rebuilt from the events, swapped in atomically).
"""

from __future__ import annotations
