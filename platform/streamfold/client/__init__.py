"""The Python SDK of the command gateway: send commands, wait for stages, read state and queries.

::

    from streamfold.client import Client
    from topologies.retail.domain import RecordSale, retail

    with Client("http://127.0.0.1:8000", context=retail) as client:
        status = client.send(RecordSale(...), wait="projected")
        stock = client.state("store_stock", "store-1/item-01", min_version=status.version)
        rows = client.query("low_stock", threshold=3)

``send`` answers a :class:`~streamfold.gateway.models.CommandStatus` once the stage is
reached with the command accepted, and raises otherwise: :class:`CommandRejected` (409, the
domain's code, message and current version), :class:`CommandInvalid` (422, naming the
field), :class:`CommandPending` (202: sent, the stage not reached in time; its
``status.command_id`` can be waited on with :meth:`Client.wait`), :class:`GatewayUnavailable`
(503 or no answer: not sent, safe to retry with the same ``command_id``),
:class:`NotAuthorized` (401, 403). :class:`AsyncClient` is the same over asyncio.
"""

from __future__ import annotations

from streamfold.client.client import (
    AggregateState,
    AsyncClient,
    Client,
    ClientError,
    CommandInvalid,
    CommandPending,
    CommandRejected,
    GatewayUnavailable,
    NotAuthorized,
    NotFound,
)
from streamfold.gateway.models import CommandStatus, QueryResult

__all__ = [
    "AggregateState",
    "AsyncClient",
    "Client",
    "ClientError",
    "CommandInvalid",
    "CommandPending",
    "CommandRejected",
    "CommandStatus",
    "GatewayUnavailable",
    "NotAuthorized",
    "NotFound",
    "QueryResult",
]
