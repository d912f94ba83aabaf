"""Microseconds per record to encode / decode a retail command: codec vs raw fastavro.

Run: ``python benchmarks/codec_bench.py [--number N]``. Each row is the best of several
repeats of N calls of the same record (``RecordSale``), candidates interleaved, timed in
process CPU time so that other processes on the machine disturb it less. The fast path's
overhead over raw fastavro is the codec's price for the Confluent header, the schema-id
lookup and typed errors; the target is at most 30 %.
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
from collections.abc import Callable
from decimal import Decimal
from io import BytesIO
from pathlib import Path

from fastavro import parse_schema, schemaless_reader, schemaless_writer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from topologies.retail.domain import RecordSale, retail, stock

from streamfold.contracts import AvroCodec, Contract, InMemorySchemaRegistry

REPEATS = 9


def best_us(fns: dict[str, Callable[[], object]], number: int) -> dict[str, float]:
    """Best-of-REPEATS time of one call of each, in microseconds, the candidates interleaved.

    Interleaving gives every candidate the same share of a noisy machine.
    """
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(REPEATS):
        for name, fn in fns.items():
            best[name] = min(
                best[name], timeit.timeit(fn, number=number, timer=time.process_time) / number * 1e6
            )
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=50_000, help="calls per repeat")
    number = parser.parse_args().number

    command = RecordSale(
        store_id="store-0042", item_id="sku-778812", sale_id="pos-7-000123",
        quantity=3, unit_price=Decimal("2.49"),
    )  # fmt: skip
    record = command.model_dump()
    # Raw fastavro gets its own parsed schemas, exactly as a hand-written consumer would.
    write_schema = parse_schema(Contract.of(RecordSale, retail.namespace).schema)
    read_schema = parse_schema(Contract.of(RecordSale, retail.namespace).schema)

    codec = AvroCodec(InMemorySchemaRegistry())
    writer = codec.writer(stock.topics.commands, RecordSale, retail.namespace)
    reader = codec.reader(RecordSale, namespace=retail.namespace)
    wire = writer.encode(command)
    body = wire[5:]
    reader.decode_dict(wire)  # warm the schema-id cache, as a running worker has

    def raw_encode() -> bytes:
        buf = BytesIO()
        schemaless_writer(buf, write_schema, record)
        return buf.getvalue()

    def raw_decode() -> object:
        return schemaless_reader(BytesIO(body), read_schema, None)

    encode = best_us(
        {
            "raw fastavro": raw_encode,
            "codec dict (fast path)": lambda: writer.encode_dict(record),
            "codec model": lambda: writer.encode(command),
        },
        number,
    )
    decode = best_us(
        {
            "raw fastavro": raw_decode,
            "codec dict (fast path)": lambda: reader.decode_dict(wire),
            "codec model": lambda: reader.decode(wire),
        },
        number,
    )
    rows = [("encode", p, us) for p, us in encode.items()]
    rows += [("decode", p, us) for p, us in decode.items()]
    raw = {op: us for op, path, us in rows if path == "raw fastavro"}
    print(f"RecordSale, {len(wire)} bytes on the wire; best of {REPEATS} x {number} calls")
    print(f"{'op':<8}{'path':<26}{'us/record':>10}{'vs raw':>10}")
    for op, path, us in rows:
        overhead = "" if path == "raw fastavro" else f"{(us / raw[op] - 1) * 100:+.0f}%"
        print(f"{op:<8}{path:<26}{us:>10.2f}{overhead:>10}")


if __name__ == "__main__":
    main()
