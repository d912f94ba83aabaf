"""Kafka transport: everything that talks to librdkafka directly, below the processes.

- ``settings``: typed connection settings (TLS, SASL), rendered into librdkafka configs;
- ``connect``: the start-up check that the brokers accept this process's credentials;
- ``admin``: topics (create, describe, the default replication factor) and the translation
  of librdkafka errors into streamfold's retryable/permanent tree;
- ``producing``: queueing a record with backpressure, for every producer;
- ``commands``: the command producer any application (or the SDK) sends with;
- ``partitioning``: murmur2, the Java client's partitioner;
- ``reading``: a topic read to its end outside any group;
- ``rejoins``: how often a client may rejoin its group before it gives up.
"""
