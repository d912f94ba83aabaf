"""Avro binary writers compiled to Python source, one function per record schema.

fastavro's generic writer walks the schema for every record: it dispatches on type names,
resolves each union by validating the datum against its branches, and looks up logical
types. The writers here do that walk once, when a schema is first used, and generate a plain
Python function with the field order, the union branches, the enum indexes and the logical
conversions spelled out. On the worker's records they write the same bytes two to three
times faster (``benchmarks/codec_bench.py``).

Scope and fallback. A writer is compiled for the schemas :mod:`streamfold.contracts.avro`
generates: records, primitives, enums, arrays, maps, unions of ``null`` and one other branch,
and the ``decimal`` / ``timestamp-millis`` / ``date`` / ``time-millis`` / ``uuid`` logical
types. Anything else (a union of two non-null branches, ``fixed``, an unknown logical type)
compiles to ``None`` and the caller keeps fastavro. A record the compiled function cannot
write (a missing field, a value of the wrong type) raises, and the caller then writes it with
fastavro, whose result (bytes or its own error) is the answer: the compiled path only ever
speeds up records fastavro writes the same way. ``tests/unit/contracts/test_compiled.py``
checks byte equality with fastavro over generated records.
"""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from collections.abc import Callable
from typing import Any

from fastavro.read import LOGICAL_READERS
from fastavro.write import LOGICAL_WRITERS

__all__ = ["CompiledReader", "CompiledWriter", "compile_reader", "compile_writer", "encode_long"]

_write_uuid = LOGICAL_WRITERS["string-uuid"]


def _checked_uuid(data: Any, schema: Any) -> Any:
    """fastavro's ``uuid`` writer, refusing a string that is not a UUID.

    fastavro writes any string as a ``uuid``, and every reader (ours, fastavro's,
    Confluent's ``AvroDeserializer``) then fails on the record: bytes that can never be read
    back. Registered in fastavro's table when this module loads, so the compiled writers and
    fastavro's own (the fallback, and any other writer in the process) refuse it with a
    ``ValueError`` naming it, which the codec reports as an ``EncodeError``."""
    if isinstance(data, str):
        uuid.UUID(data)
    return _write_uuid(data, schema)


LOGICAL_WRITERS["string-uuid"] = _checked_uuid

#: ``write(record, out)`` appends the record's Avro binary encoding to ``out``.
CompiledWriter = Callable[[dict[str, Any], bytearray], None]

_SMALL = 1 << 13  # zig-zag varints of -8192..8191 are precomputed


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINTS = [_zigzag(n) for n in range(-_SMALL, _SMALL)]


def _long(n: int) -> bytes:
    """The zig-zag varint of ``n`` (an Avro int or long)."""
    if -_SMALL <= n < _SMALL:
        return _VARINTS[n + _SMALL]
    if not -(1 << 63) <= n < (1 << 63):
        raise OverflowError(f"{n} does not fit an Avro long")
    return _zigzag(n)


encode_long = _long


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_TIMESTAMP_MILLIS = LOGICAL_WRITERS["long-timestamp-millis"]


def _timestamp_millis(value: Any) -> int:
    """An aware datetime as milliseconds since the epoch, exactly as fastavro computes it
    (an int is taken as milliseconds already)."""
    if type(value) is int:
        return value
    if type(value) is dt.datetime and value.tzinfo is not None:
        delta = value - _EPOCH
        return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000
    return _TIMESTAMP_MILLIS(value, {})  # type: ignore[no-any-return]


_BASE_GLOBALS: dict[str, Any] = {
    "_long": _long,
    "_timestamp_millis": _timestamp_millis,
    "_double": struct.Struct("<d").pack,
    "_float": struct.Struct("<f").pack,
}


class _Unsupported(Exception):
    """The schema uses something the compiler leaves to fastavro."""


class _Generator:
    """Python source for the records of one schema: a function per record (named types are
    generated on first use, in document order, so each is defined before a reference to it)
    and the constants they use."""

    def __init__(self, constants: dict[str, Any]) -> None:
        self.lines: list[str] = []
        self.globals: dict[str, Any] = dict(constants)
        self.records: dict[str, str] = {}  # full name -> function name
        self.enums: dict[str, str] = {}  # full name -> its table's name
        self.counter = 0

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}{self.counter}"

    def constant(self, stem: str, value: Any) -> str:
        name = self.fresh(stem)
        self.globals[name] = value
        return name

    def record_function(self, schema: dict[str, Any]) -> str:
        """The function of record ``schema``, generated on its first use."""
        name = schema.get("name")
        if not isinstance(name, str) or not isinstance(schema.get("fields"), list):
            raise _Unsupported("a record without a name or fields")
        found = self.records.get(name)
        if found is None:
            found = self.records[name] = self.fresh("_record")
            self.emit_record(found, schema)
        return found

    def value(self, avro_type: Any, var: str, depth: int) -> list[str]:
        """Lines that write (or read) ``var``, a value of ``avro_type``."""
        if isinstance(avro_type, str):
            return self.named_or_primitive(avro_type, var)
        if isinstance(avro_type, list):
            return self.union(avro_type, var, depth)
        if not isinstance(avro_type, dict):
            raise _Unsupported(f"type {avro_type!r}")
        kind = avro_type.get("type")
        logical = avro_type.get("logicalType")
        if logical is not None:
            if not isinstance(kind, str) or kind in ("fixed", "record", "enum", "array", "map"):
                raise _Unsupported(f"logical type {logical} on {kind!r}")
            return self.logical(avro_type, kind, logical, var)
        if kind == "record":
            return self.named_or_primitive(self.records_name(avro_type), var)
        if kind == "enum":
            return self.named_or_primitive(self.enum_name(avro_type), var)
        if kind in ("array", "map"):
            return self.blocks(avro_type, kind, var, depth)
        if isinstance(kind, str) and kind not in ("fixed", "error"):
            return self.named_or_primitive(kind, var)
        raise _Unsupported(f"type {kind!r}")

    def records_name(self, schema: dict[str, Any]) -> str:
        """Generate the function of record ``schema`` if new; return the record's name."""
        self.record_function(schema)
        return str(schema["name"])

    def enum_name(self, schema: dict[str, Any]) -> str:
        """Define the table of enum ``schema`` if new; return the enum's name."""
        name = schema.get("name")
        if not isinstance(name, str):
            raise _Unsupported("an enum without a name")
        if name not in self.enums:
            self.enums[name] = self.constant("_enum", self.enum_table(schema["symbols"]))
        return name

    def emit_record(self, function: str, schema: dict[str, Any]) -> None:
        raise NotImplementedError

    def named_or_primitive(self, name: str, var: str) -> list[str]:
        raise NotImplementedError

    def union(self, branches: list[Any], var: str, depth: int) -> list[str]:
        raise NotImplementedError

    def logical(self, schema: dict[str, Any], kind: str, logical: str, var: str) -> list[str]:
        raise NotImplementedError

    def blocks(self, schema: dict[str, Any], kind: str, var: str, depth: int) -> list[str]:
        raise NotImplementedError

    def enum_table(self, symbols: list[str]) -> Any:
        raise NotImplementedError

    def load(self, function: str) -> Any:
        """Compile the source; return ``function`` from it."""
        namespace = dict(self.globals)
        source = "\n".join(self.lines)
        exec(compile(source, "<streamfold.contracts.compiled>", "exec"), namespace)
        return namespace[function]


class _Compiler(_Generator):
    """Generates an encoding function per record of a schema."""

    def __init__(self) -> None:
        super().__init__(_BASE_GLOBALS)

    def compile(self, schema: dict[str, Any]) -> CompiledWriter:
        writer: CompiledWriter = self.load(self.record_function(schema))
        return writer

    def emit_record(self, function: str, schema: dict[str, Any]) -> None:
        body: list[str] = []
        for field in schema["fields"]:  # their named types are defined before this function
            if field["type"] in ("float", "double"):
                body.append(f"v = float(r[{field['name']!r}])")
            else:
                body.append(f"v = r[{field['name']!r}]")
            body += self.value(field["type"], "v", depth=0)
        self.lines.append(f"def {function}(r, out):")
        self.lines += [f"    {line}" for line in body] or ["    pass"]
        self.lines.append("")

    def blocks(self, schema: dict[str, Any], kind: str, var: str, depth: int) -> list[str]:
        """An array or a map: one block of every item, then the empty block."""
        item = f"i{depth}"
        if kind == "array":
            loop = [f"    for {item} in {var}:"]
            inner = self.value(schema["items"], item, depth + 1)
        else:
            key = f"k{depth}"
            loop = [
                f"    for {key}, {item} in {var}.items():",
                f"        {key} = {key}.encode()",
                f"        out += _long(len({key}))",
                f"        out += {key}",
            ]
            inner = self.value(schema["values"], item, depth + 1)
        return [
            f"if {var}:",
            f"    out += _long(len({var}))",
            *loop,
            *(f"        {line}" for line in inner),
            'out += b"\\x00"',
        ]

    def named_or_primitive(self, name: str, var: str) -> list[str]:
        if name == "null":
            return [f"if {var} is not None:", '    raise TypeError("a null field holds a value")']
        if name == "boolean":
            return [f'out += b"\\x01" if {var} else b"\\x00"']
        if name in ("int", "long"):
            return [f"out += _long({var})"]
        if name == "double":
            return [f"out += _double({var})"]
        if name == "float":
            return [f"out += _float({var})"]
        if name == "string":
            return [f"{var} = {var}.encode()", f"out += _long(len({var}))", f"out += {var}"]
        if name == "bytes":
            return [f"out += _long(len({var}))", f"out += {var}"]
        if name in self.records:
            return [f"{self.records[name]}({var}, out)"]
        if name in self.enums:
            return [f"out += _long({self.enums[name]}[{var}])"]
        raise _Unsupported(f"type {name!r}")

    def union(self, branches: list[Any], var: str, depth: int) -> list[str]:
        if len(branches) != 2 or "null" not in branches:
            raise _Unsupported("a union other than null and one type")
        null_index = branches.index("null")
        other = branches[1 - null_index]
        inner = self.value(other, var, depth)
        return [
            f"if {var} is None:",
            f"    out += {_zigzag(null_index)!r}",
            "else:",
            f"    out += {_zigzag(1 - null_index)!r}",
            *(f"    {line}" for line in inner),
        ]

    def enum_table(self, symbols: list[str]) -> Any:
        return {symbol: index for index, symbol in enumerate(symbols)}

    def logical(self, schema: dict[str, Any], kind: str, logical: str, var: str) -> list[str]:
        if (kind, logical) == ("long", "timestamp-millis"):
            return [f"out += _long(_timestamp_millis({var}))"]
        # As fastavro: its converter when it has one, else the underlying type as it is.
        converter = LOGICAL_WRITERS.get(f"{kind}-{logical}")
        if converter is None:
            return self.named_or_primitive(kind, var)
        function = self.constant("_logical", converter)
        argument = self.constant("_schema", schema)
        return [f"{var} = {function}({var}, {argument})", *self.named_or_primitive(kind, var)]


def compile_writer(parsed: Any) -> CompiledWriter | None:
    """A compiled writer of a (fastavro-parsed) record schema, or None to keep fastavro."""
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    try:
        return _Compiler().compile(parsed)
    except (_Unsupported, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------- readers

#: ``read(data, start)`` decodes the record that fills ``data[start:]`` (raises otherwise).
CompiledReader = Callable[[bytes, int], dict[str, Any]]


def _read_long(d: bytes, p: int) -> tuple[int, int]:
    """A zig-zag varint at ``d[p]``: ``(value, position after it)``."""
    b = d[p]
    n = b & 0x7F
    shift = 7
    while b & 0x80:
        p += 1
        b = d[p]
        n |= (b & 0x7F) << shift
        shift += 7
        if shift > 70:
            raise ValueError("a varint longer than ten bytes")
    return (n >> 1) ^ -(n & 1), p + 1


class _Truncated(Exception):
    """The data ends (or a length points) before the value does."""


_READ_GLOBALS: dict[str, Any] = {
    "_read_long": _read_long,
    "_Truncated": _Truncated,
    "_double": struct.Struct("<d").unpack_from,
    "_float": struct.Struct("<f").unpack_from,
}


class _ReaderCompiler(_Generator):
    """Generates a decoding function per record of a writer schema (no resolution: the
    record is read as written, as fastavro reads it without a reader schema)."""

    def __init__(self) -> None:
        super().__init__(_READ_GLOBALS)

    def compile(self, schema: dict[str, Any]) -> CompiledReader:
        top = self.record_function(schema)
        self.lines += [
            "def _read(d, p):",
            f"    r, p = {top}(d, p)",
            "    if p != len(d):",
            "        raise _Truncated(p)",
            "    return r",
        ]
        reader: CompiledReader = self.load("_read")
        return reader

    def emit_record(self, function: str, schema: dict[str, Any]) -> None:
        body = ["r = {}"]
        for field in schema["fields"]:
            body += self.value(field["type"], "v", 0)
            body.append(f"r[{field['name']!r}] = v")
        self.lines.append(f"def {function}(d, p):")
        self.lines += [f"    {line}" for line in body]
        self.lines += ["    return r, p", ""]

    @staticmethod
    def long(var: str) -> list[str]:
        """Read a varint into ``var`` (one byte inline, longer ones by a call)."""
        return [
            "b = d[p]",
            "if b < 128:",
            f"    {var} = (b >> 1) ^ -(b & 1)",
            "    p += 1",
            "else:",
            f"    {var}, p = _read_long(d, p)",
        ]

    def raw_bytes(self, var: str) -> list[str]:
        return [
            *self.long("n"),
            "e = p + n",
            "if n < 0 or e > len(d):",
            "    raise _Truncated(p)",
            f"{var} = d[p:e]",
            "p = e",
        ]

    def logical(self, schema: dict[str, Any], kind: str, logical: str, var: str) -> list[str]:
        # As fastavro: its converter when it has one, else the underlying type as it is.
        lines = self.named_or_primitive(kind, var)
        converter = LOGICAL_READERS.get(f"{kind}-{logical}")
        if converter is None:
            return lines
        function = self.constant("_logical", converter)
        argument = self.constant("_schema", schema)
        return [*lines, f"{var} = {function}({var}, {argument}, None)"]

    def blocks(self, schema: dict[str, Any], kind: str, var: str, depth: int) -> list[str]:
        """An array or map: blocks of items, a negative count followed by a byte size."""
        count, item, key = f"c{depth}", f"i{depth}", f"k{depth}"
        lines = [f"{var} = {{}}" if kind == "map" else f"{var} = []"]
        lines += self.long(count)
        inner = self.value(schema["values" if kind == "map" else "items"], item, depth + 1)
        store = f"{var}[{key}] = {item}" if kind == "map" else f"{var}.append({item})"
        read_key = self.named_or_primitive("string", key) if kind == "map" else []
        lines += [
            f"while {count}:",
            f"    if {count} < 0:",
            f"        {count} = -{count}",
            *(f"        {line}" for line in self.long("_size")),
            f"    for _ in range({count}):",
            *(f"        {line}" for line in (*read_key, *inner, store)),
            *(f"    {line}" for line in self.long(count)),
        ]
        return lines

    def named_or_primitive(self, name: str, var: str) -> list[str]:
        if name == "null":
            return [f"{var} = None"]
        if name == "boolean":
            return [f"{var} = d[p] != 0", "p += 1"]
        if name in ("int", "long"):
            return self.long(var)
        if name in ("double", "float"):
            size = 8 if name == "double" else 4
            return [
                f"if p + {size} > len(d):",
                "    raise _Truncated(p)",
                f"({var},) = _{name}(d, p)",
                f"p += {size}",
            ]
        if name == "string":
            return [*self.raw_bytes(var), f"{var} = {var}.decode()"]
        if name == "bytes":
            return self.raw_bytes(var)
        if name in self.records:
            return [f"{var}, p = {self.records[name]}(d, p)"]
        if name in self.enums:
            table = self.enums[name]
            return [*self.long("n"), "if n < 0:", "    raise _Truncated(p)", f"{var} = {table}[n]"]
        raise _Unsupported(f"type {name!r}")

    def enum_table(self, symbols: list[str]) -> Any:
        return tuple(symbols)

    def union(self, branches: list[Any], var: str, depth: int) -> list[str]:
        lines = self.long("n")
        for index, branch in enumerate(branches):
            keyword = "if" if index == 0 else "elif"
            lines.append(f"{keyword} n == {index}:")
            lines += [f"    {line}" for line in self.value(branch, var, depth)]
        lines += ["else:", "    raise _Truncated(p)"]
        return lines


def compile_reader(parsed: Any) -> CompiledReader | None:
    """A compiled reader of a (fastavro-parsed) writer schema, or None to keep fastavro.

    It reads a record exactly as fastavro reads it without a reader schema, and raises on
    anything it cannot read; the caller then reads with fastavro, which names the problem.
    """
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    try:
        return _ReaderCompiler().compile(parsed)
    except (_Unsupported, KeyError, TypeError):
        return None
