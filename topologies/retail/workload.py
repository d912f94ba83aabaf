"""A reproducible stream of retail commands, for tests and benchmarks.

Store-stock commands over ``aggregates`` store/item pairs: supplies (40 %), sales (50 %, some
rejected for insufficient stock or because the stock does not exist yet) and adjustments.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from decimal import Decimal

from streamfold import Command
from topologies.retail.domain import (
    AdjustmentReason,
    AdjustStock,
    ReceiveSupply,
    RecordSale,
)

__all__ = ["stock_commands"]


def stock_commands(aggregates: int, commands: int, seed: int = 7) -> Iterator[Command]:
    """``commands`` store-stock commands spread over ``aggregates`` aggregates."""
    rng = random.Random(seed)
    pairs = [(f"store-{n % 97}", f"item-{n}") for n in range(aggregates)]
    for i in range(commands):
        store_id, item_id = pairs[rng.randrange(aggregates)]
        draw = rng.random()
        if draw < 0.4:
            yield ReceiveSupply(
                store_id=store_id,
                item_id=item_id,
                supplier_id="supplier-1",
                quantity=rng.randint(1, 20),
            )
        elif draw < 0.9:
            yield RecordSale(
                store_id=store_id,
                item_id=item_id,
                sale_id=f"sale-{i}",
                quantity=rng.randint(1, 6),
                unit_price=Decimal("2.50"),
            )
        else:
            yield AdjustStock(
                store_id=store_id,
                item_id=item_id,
                delta=rng.randint(-3, 3),
                reason=AdjustmentReason.stock_count,
            )
