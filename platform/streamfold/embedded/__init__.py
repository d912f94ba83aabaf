"""The embedded local stack: a real Apache Kafka started from jars the project fetches.

No Docker engine is needed: :mod:`streamfold.embedded.jars` resolves the official Kafka
jars with Maven into a cache directory, and :mod:`streamfold.embedded.kafka` formats KRaft
storage and runs one or more combined broker+controller JVMs as child processes.
"""
