"""Schemathesis against the gateway's own /openapi.json, on a real retail stack.

Every operation gets generated requests (valid and invalid: schemathesis's positive and
negative modes); each answer must not be a 5xx, must have a status the operation declares
and a body that matches the declared schema. The number of examples per operation follows
STREAMFOLD_TEST_SCALE (25 at 1.0, CI runs 0.2).

Waits are kept short two ways, so a run is bounded: the gateway under test caps every wait
at ``MAX_WAIT_MS``, and a generated ``Wait-Timeout-Ms`` that is valid is lowered to it.

The same run goes again with auth on (a second gateway on the same stack, JWT, whose
schema declares the 401/403 answers): generated requests carry a valid tenant's token, and
a last run sends each operation's requests with a token that fails verification, every one
of which must be a conforming 401.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import jwt
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)
from tests.fault.report import write_section

from streamfold.testing.pytest_plugin import scaled

from .conftest import RetailStack

pytestmark = pytest.mark.integration

Operation = schemathesis.APIOperation[Any, Any, Any, Any]
Case = schemathesis.Case[Any]

MAX_WAIT_MS = 300
JWT_SECRET = "a-schemathesis-secret-of-32-bytes!"
SCALE = float(os.environ.get("STREAMFOLD_TEST_SCALE", "1.0"))
EXAMPLES = scaled(25, SCALE, 5)
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzzed_stack(stack_factory: Callable[..., RetailStack]) -> RetailStack:
    return stack_factory(
        STREAMFOLD_GATEWAY_MAX_WAIT_MS=str(MAX_WAIT_MS),
        STREAMFOLD_GATEWAY_DEFAULT_WAIT_MS=str(MAX_WAIT_MS),
    )


@pytest.fixture(scope="module")
def gateway_schema(fuzzed_stack: RetailStack) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzzed_stack.url}/openapi.json")


def bearer(tenant: str, secret: str = JWT_SECRET) -> dict[str, str]:
    claims = {"sub": f"fuzzer-of-{tenant}", "tenant": tenant, "exp": int(time.time()) + 3600}
    return {"Authorization": f"Bearer {jwt.encode(claims, secret, algorithm='HS256')}"}


@pytest.fixture(scope="module")
def secured_schema(fuzzed_stack: RetailStack) -> schemathesis.BaseSchema:
    """The schema of a JWT-secured gateway on the fuzzed stack (the docs need no token)."""
    gateway = fuzzed_stack.gateway(
        STREAMFOLD_GATEWAY_MAX_WAIT_MS=str(MAX_WAIT_MS),
        STREAMFOLD_GATEWAY_DEFAULT_WAIT_MS=str(MAX_WAIT_MS),
        STREAMFOLD_GATEWAY_AUTH="jwt",
        STREAMFOLD_GATEWAY_JWT_SECRET=JWT_SECRET,
    )
    return schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")


def operations_of(schema: schemathesis.BaseSchema) -> list[Operation]:
    """Every operation of ``schema`` (an operation schemathesis cannot read fails here)."""
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            pytest.fail(f"schemathesis cannot read an operation: {result.err()}")
        operations.append(result.ok())
    return operations


def short_waits(case: Case) -> None:
    """Lower a valid generated ``Wait-Timeout-Ms``; leave an invalid one to be refused."""
    headers = case.headers if case.headers is not None else {}
    value = headers.get("Wait-Timeout-Ms")
    if isinstance(value, str) and value.isdigit():
        headers["Wait-Timeout-Ms"] = str(min(int(value), MAX_WAIT_MS))


def describe(failure: BaseException) -> list[str]:
    """The messages of a check failure (or of each failure of a group)."""
    if isinstance(failure, BaseExceptionGroup):
        return [line for inner in failure.exceptions for line in describe(inner)]
    return [f"{type(failure).__name__}: {failure}"]


def fuzz(
    operation: Operation,
    mode: GenerationMode,
    headers: dict[str, str] | None = None,
    statuses: list[int] | None = None,
    answered: list[tuple[int, str]] | None = None,
) -> str | None:
    """Run ``EXAMPLES`` generated requests on ``operation``; the first failure, described.

    ``headers`` go with every request (a credential); ``statuses`` collects each answer's,
    and ``answered`` each status with its request as a curl command.
    Shrinking is off to bound the time: the failing request is the last one sent, and it
    is reported as a curl command with every failed check.
    """
    sent: list[Case] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Case) -> None:
        short_waits(case)
        sent.append(case)
        response = case.call_and_validate(checks=CHECKS, headers=headers, timeout=30)
        if statuses is not None:
            statuses.append(response.status_code)
        if answered is not None:
            answered.append((response.status_code, case.as_curl_command(headers=headers)))

    try:
        run()
    except Unsatisfiable:
        return None  # nothing to generate in this mode (no parameter can be made invalid)
    except (Exception, BaseExceptionGroup) as failure:  # noqa: BLE001 - reported, not swallowed
        request = sent[-1].as_curl_command() if sent else "(no request)"
        return "\n    ".join([f"{operation.label} [{mode.value}]", request, *describe(failure)])
    return None


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_gateway_honours_its_openapi(
    gateway_schema: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    operations = operations_of(gateway_schema)
    assert len(operations) >= 15
    failures = [f for f in (fuzz(op, mode) for op in operations) if f is not None]
    assert failures == [], "\n\n".join(failures)


def test_the_schema_has_every_operation(gateway_schema: schemathesis.BaseSchema) -> None:
    """The fuzzing above covers the whole API: commands, state, queries, lookups."""
    operations = {f"{op.method.upper()} {op.path}" for op in operations_of(gateway_schema)}
    assert "POST /retail/store_stock/record_sale" in operations
    assert "GET /retail/store_stock/{id}/state" in operations
    assert "GET /retail/queries/store_daily_sales" in operations
    assert "GET /commands/{command_id}" in operations
    assert len(operations) >= 15, sorted(operations)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_secured_gateway_honours_its_openapi(
    secured_schema: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    """With a valid tenant's token: no 5xx, every answer declared and conforming."""
    operations = operations_of(secured_schema)
    assert len(operations) >= 15
    statuses: list[int] = []
    failures = [
        f
        for f in (fuzz(op, mode, bearer("tenant-fuzz"), statuses) for op in operations)
        if f is not None
    ]
    assert failures == [], "\n\n".join(failures)
    # The token was accepted: requests got past auth, to the routes themselves.
    assert len([s for s in statuses if s != 401]) > len(statuses) // 2, sorted(statuses)
    answers = ", ".join(f"{code}: {count:,}" for code, count in sorted(Counter(statuses).items()))
    write_section(
        f"fuzz-gateway-{mode.value}",
        f"schemathesis against the JWT-secured gateway ({mode.value} requests)",
        f"{len(statuses):,} generated requests over {len(operations)} operations of its"
        f" /openapi.json, with a valid tenant's token: 0 answers of 5xx, every status declared"
        f" and every body conforming to its schema. Answers: {answers}.",
        SCALE,
    )


def test_the_secured_gateway_refuses_a_bad_token_as_its_openapi_says(
    secured_schema: schemathesis.BaseSchema,
) -> None:
    """With a token signed by another key: a conforming 401 from every operation."""
    statuses: list[int] = []
    answered: list[tuple[int, str]] = []
    bad = bearer("tenant-fuzz", secret="another-secret-that-is-32-bytes!!")
    failures = [
        f
        for f in (
            fuzz(op, GenerationMode.POSITIVE, bad, statuses, answered)
            for op in operations_of(secured_schema)
        )
        if f is not None
    ]
    assert failures == [], "\n\n".join(failures)
    assert statuses, "no request was sent"
    not_refused = [f"{status}: {curl}" for status, curl in answered if status != 401]
    assert not_refused == [], "\n".join(not_refused)
    write_section(
        "fuzz-gateway-bad-token",
        "schemathesis against the JWT-secured gateway (a token signed by another key)",
        f"{len(statuses):,} generated requests: every one a conforming 401.",
        SCALE,
    )
