"""The schema registry: Confluent's REST API over a deterministic state machine in Kafka.

- :mod:`~streamfold.registry.state`: the state machine every replica applies the log with;
- :mod:`~streamfold.registry.log`: the intent log in a single-partition compacted topic;
- :mod:`~streamfold.registry.api`: the REST API as an ASGI application;
- :mod:`~streamfold.registry.server`: settings, ``serve`` and the child-process runner.
"""

from __future__ import annotations

from streamfold.registry.errors import RegistryApiError, RegistryStoreError
from streamfold.registry.server import RegistryProcess, RegistryServerSettings, serve

__all__ = [
    "RegistryApiError",
    "RegistryProcess",
    "RegistryServerSettings",
    "RegistryStoreError",
    "serve",
]
