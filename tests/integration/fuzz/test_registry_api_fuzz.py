"""The registry's REST API on generated requests, over HTTP against a real registry process.

Paths (every route, with hostile, percent-encoded segments), query strings, bodies (JSON of
any shape, Avro-like schemas with hostile names, plain garbage) and headers are generated;
each answer must be below 500 and, when it is an error, carry a Confluent ``error_code``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.fault.report import write_section

from streamfold.testing.pytest_plugin import scaled

pytestmark = pytest.mark.integration

EXAMPLES = scaled(2000, float(os.environ.get("STREAMFOLD_TEST_SCALE", "1.0")), 400)
RUN = uuid.uuid4().hex[:8]  # this module's subjects start with it

#: Every route of streamfold.registry.api, ``{x}`` marking a generated segment.
ROUTES = [
    ("GET", "/"),
    ("GET", "/healthz"),
    ("GET", "/contexts"),
    ("GET", "/schemas/types"),
    ("GET", "/schemas"),
    ("GET", "/schemas/ids/{id}"),
    ("GET", "/schemas/ids/{id}/schema"),
    ("GET", "/schemas/guids/{guid}"),
    ("GET", "/schemas/ids/{id}/subjects"),
    ("GET", "/schemas/ids/{id}/versions"),
    ("GET", "/subjects"),
    ("GET", "/subjects/{subject}/versions"),
    ("POST", "/subjects/{subject}/versions"),
    ("GET", "/subjects/{subject}/versions/{version}"),
    ("GET", "/subjects/{subject}/versions/{version}/schema"),
    ("GET", "/subjects/{subject}/versions/{version}/referencedby"),
    ("GET", "/subjects/{subject}/metadata"),
    ("POST", "/subjects/{subject}"),
    ("DELETE", "/subjects/{subject}"),
    ("DELETE", "/subjects/{subject}/versions/{version}"),
    ("POST", "/compatibility/subjects/{subject}/versions/{version}"),
    ("POST", "/compatibility/subjects/{subject}/versions"),
    ("GET", "/config"),
    ("PUT", "/config"),
    ("DELETE", "/config"),
    ("GET", "/config/{subject}"),
    ("PUT", "/config/{subject}"),
    ("DELETE", "/config/{subject}"),
    ("GET", "/mode"),
    ("PUT", "/mode"),
    ("GET", "/mode/{subject}"),
    ("PUT", "/mode/{subject}"),
    ("DELETE", "/mode/{subject}"),
    ("POST", "/associations"),
    ("GET", "/associations/resources/{namespace}/{name}"),
    ("DELETE", "/associations/resources/{id}"),
    ("GET", "/no/such/route"),
]
HOSTILE_TEXT = ["a`b", "x'; DROP", "é名", "..", "%", "%2F", "a/b", "\x00", " ", "-1", "latest"]

numbers = st.integers(-(2**40), 2**40) | st.sampled_from([0, 1, 2, -1, 2**31, 2**63])
texts = st.text(max_size=12) | st.sampled_from(HOSTILE_TEXT)
subjects = st.sampled_from([f"{RUN}-a", f"{RUN}-b", f"{RUN}-c"]) | texts.map(lambda t: f"{RUN}-{t}")
segments = {
    "id": numbers.map(str) | texts,
    "guid": st.uuids().map(str) | texts,
    "subject": subjects,
    "version": numbers.map(str) | st.sampled_from(["latest", "-1"]) | texts,
    "namespace": texts,
    "name": texts,
}
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=10,
)
names = st.sampled_from(["Thing", "shop.Thing", "Other"]) | texts
primitive = st.sampled_from(
    ["null", "boolean", "int", "long", "float", "double", "bytes", "string", "Thing", "nope"]
)


def avro_types(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    field = st.fixed_dictionaries(
        {"name": names, "type": inner}, optional={"default": json_values, "aliases": json_values}
    )
    return (
        st.fixed_dictionaries(
            {"type": st.just("record"), "name": names, "fields": st.lists(field, max_size=3)},
            optional={"namespace": texts, "aliases": json_values},
        )
        | st.fixed_dictionaries(
            {"type": st.just("enum"), "name": names, "symbols": st.lists(texts, max_size=3)},
            optional={"default": texts},
        )
        | st.fixed_dictionaries({"type": st.just("array"), "items": inner})
        | st.fixed_dictionaries({"type": st.just("map"), "values": inner})
        | st.fixed_dictionaries({"type": st.just("fixed"), "name": names, "size": numbers})
        | st.fixed_dictionaries(
            {"type": primitive, "logicalType": st.sampled_from(["decimal", "uuid", "date", "x"])},
            optional={"precision": numbers, "scale": numbers},
        )
        | st.lists(inner, max_size=3)  # a union
    )


schemas = st.recursive(primitive, avro_types, max_leaves=6)
bodies = (
    st.none()
    | st.binary(max_size=40)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.fixed_dictionaries(
        {},
        optional={
            "schema": schemas.map(json.dumps) | json_values,
            "schemaType": st.sampled_from(["AVRO", "avro", "JSON", "PROTOBUF", ""]) | json_values,
            "references": json_values
            | st.lists(
                st.fixed_dictionaries(
                    {"name": texts, "subject": subjects, "version": numbers | json_values}
                ),
                max_size=2,
            ),
            "compatibility": st.sampled_from(["BACKWARD", "FULL_TRANSITIVE", "NONE", "bad"])
            | json_values,
            "mode": st.sampled_from(["READWRITE", "READONLY", "IMPORT", "bad"]) | json_values,
            "id": numbers | json_values,
            "version": numbers | json_values,
            "metadata": json_values,
            "ruleSet": json_values,
        },
    ).map(lambda d: json.dumps(d).encode())
)
QUERY_KEYS = [
    "normalize",
    "deleted",
    "permanent",
    "offset",
    "limit",
    "subject",
    "subjectPrefix",
    "verbose",
    "defaultToGlobal",
    "fetchMaxId",
    "format",
    "lookupDeletedSchema",
    "force",
    "deletedOnly",
]
queries = st.lists(
    st.tuples(st.sampled_from(QUERY_KEYS) | texts, numbers.map(str) | texts | st.just("true")),
    max_size=4,
)
content_types = st.sampled_from(
    [
        "application/vnd.schemaregistry.v1+json",
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
    ]
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, list[tuple[str, str]], bytes | None, str]:
    method, path = draw(st.sampled_from(ROUTES))
    if draw(st.integers(0, 9)) == 0:  # now and then, a method the route does not take
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
    for name, strategy in segments.items():
        while "{" + name + "}" in path:
            segment = quote(draw(strategy), safe="") or "%20"
            path = path.replace("{" + name + "}", segment, 1)
    return method, path, draw(queries), draw(bodies), draw(content_types)


@pytest.fixture(scope="module")
def registry_client(schema_registry: Any) -> Any:
    with httpx.Client(base_url=schema_registry.url, timeout=30) as client:
        yield client


Request = tuple[str, str, list[tuple[str, str]], bytes | None, str]


def test_no_generated_request_gets_a_server_error(registry_client: httpx.Client) -> None:
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(request=requests())
    def send(request: Request) -> None:
        method, path, query, body, content_type = request
        answer = registry_client.request(
            method,
            path,
            params=tuple(query),
            content=body,
            headers={"Content-Type": content_type},
        )
        statuses[answer.status_code] += 1
        assert answer.status_code < 500, (method, path, query, body, answer.text)
        payload = answer.json()
        is_error = answer.status_code >= 400
        documented = isinstance(payload, dict) and isinstance(payload.get("error_code"), int)
        assert documented or not is_error, (method, path, payload)

    send()
    # The requests reached the handlers: some succeeded, most were refused in several ways.
    assert statuses[200] > 0, statuses
    assert len([s for s in statuses if 400 <= s < 500]) >= 4, statuses
    answers = ", ".join(f"{code}: {count:,}" for code, count in sorted(statuses.items()))
    write_section(
        "fuzz-registry",
        "The registry's REST API on generated requests",
        f"{sum(statuses.values()):,} generated requests over {len(ROUTES)} routes (hostile"
        " path segments, query strings, bodies, content types): 0 answers of 5xx, every"
        f" error with a Confluent `error_code`. Answers: {answers}.",
        float(os.environ.get("STREAMFOLD_TEST_SCALE", "1.0")),
    )
