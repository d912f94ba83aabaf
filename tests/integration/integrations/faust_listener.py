"""A Faust application over streamfold's retail topics, run as a process by the test.

It subscribes to ``store_stock`` events through :class:`StreamfoldTopics` and appends each
event it receives to ``$OUT`` (one JSON line: key, model class, fields), and on start sends
one ``ReceiveSupply`` with the command id ``$COMMAND_ID`` for a streamfold worker to process.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import faust
from topologies.retail.domain import ReceiveSupply, retail

from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import ConfluentSchemaRegistry
from streamfold.domain import Event
from streamfold.integrations.faust import StreamfoldTopics


def main() -> None:
    out = Path(os.environ["OUT"])
    app = faust.App(
        os.environ["APP_ID"],
        broker=f"kafka://{os.environ['BOOTSTRAP']}",
        datadir=os.environ["DATADIR"],
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_replication_factor=1,
    )
    avro = AvroCodec(ConfluentSchemaRegistry.from_url(os.environ["REGISTRY_URL"]))
    topics = StreamfoldTopics(app, retail, avro, topic_prefix=os.environ["PREFIX"])

    @app.agent(topics.events("store_stock"))
    async def on_stock(stream: Any) -> None:
        async for key, event in stream.items():
            line = {
                "key": key,
                "type": type(event).__name__,
                "is_event": isinstance(event, Event),
                "fields": event.model_dump(mode="json"),
            }
            with out.open("a", encoding="utf-8") as file:
                file.write(json.dumps(line) + "\n")

    @app.task
    async def send_one() -> None:
        command = ReceiveSupply(
            store_id="faust", item_id="from-faust", supplier_id="acme", quantity=7
        )
        await topics.send_command(command, command_id=os.environ["COMMAND_ID"], tenant="t-faust")

    faust.Worker(app, loglevel=logging.WARNING, quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
