"""Kafka transport: typed connection settings, admin operations, client factories."""
