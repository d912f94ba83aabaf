"""Auth and tenancy of the gateway: API keys and HS256 JWTs, on two real retail stacks.

Both stacks are module-scoped (one per auth mode); every test parametrised over
``secured`` runs against each of them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest

from .conftest import RetailStack

pytestmark = pytest.mark.integration

PROBLEM_JSON = "application/problem+json"
SECRET = "a-test-secret-of-at-least-32-bytes!!"
OTHER_SECRET = "another-secret-32-bytes-long!!!!"
KEYS = {"tenant-a": "key-a-1c0ffee", "tenant-b": "key-b-2decade"}
RECEIVE = "/retail/store_stock/receive_supply"
SALE = "/retail/store_stock/record_sale"
REGISTER = "/retail/supplier/register_supplier"


def fresh(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:10]}"


def token(tenant: str | None, *, secret: str = SECRET, exp_in_s: int = 600) -> str:
    claims: dict[str, Any] = {"sub": f"user-of-{tenant}", "exp": int(time.time()) + exp_in_s}
    if tenant is not None:
        claims["tenant"] = tenant
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass
class Secured:
    """A stack with auth on, and the credentials its tests use."""

    stack: RetailStack
    good: dict[str, dict[str, str]]  # tenant → headers
    bad: dict[str, dict[str, str]]  # why → headers

    def client(self, tenant: str | None) -> httpx.Client:
        headers = self.good[tenant] if tenant is not None else {}
        return self.stack.client(headers=headers)


@pytest.fixture(scope="module")
def api_key_stack(stack_factory: Callable[..., RetailStack]) -> Secured:
    stack = stack_factory(
        STREAMFOLD_GATEWAY_AUTH="api_key",
        STREAMFOLD_GATEWAY_API_KEYS=",".join(
            f"{key}={tenant}:user-of-{tenant}" for tenant, key in KEYS.items()
        ),
    )
    return Secured(
        stack,
        good={tenant: {"Authorization": f"Bearer {key}"} for tenant, key in KEYS.items()},
        bad={
            "unknown key": {"Authorization": "Bearer key-c-not-configured"},
            "unknown X-API-Key": {"X-API-Key": "key-c-not-configured"},
            "not bearer": {"Authorization": f"Basic {KEYS['tenant-a']}"},
        },
    )


@pytest.fixture(scope="module")
def jwt_stack(stack_factory: Callable[..., RetailStack]) -> Secured:
    stack = stack_factory(STREAMFOLD_GATEWAY_AUTH="jwt", STREAMFOLD_GATEWAY_JWT_SECRET=SECRET)
    return Secured(
        stack,
        good={t: {"Authorization": f"Bearer {token(t)}"} for t in KEYS},
        bad={
            "bad signature": {"Authorization": f"Bearer {token('tenant-a', secret=OTHER_SECRET)}"},
            "expired": {"Authorization": f"Bearer {token('tenant-a', exp_in_s=-60)}"},
            "no tenant claim": {"Authorization": f"Bearer {token(None)}"},
            "not a jwt": {"Authorization": "Bearer not.a.jwt"},
        },
    )


@pytest.fixture(params=["api_key", "jwt"])
def secured(request: pytest.FixtureRequest) -> Secured:
    return request.getfixturevalue(f"{request.param}_stack")  # type: ignore[no-any-return]


@pytest.fixture
def tenant_a(secured: Secured) -> Iterator[httpx.Client]:
    with secured.client("tenant-a") as client:
        yield client


@pytest.fixture
def tenant_b(secured: Secured) -> Iterator[httpx.Client]:
    with secured.client("tenant-b") as client:
        yield client


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def supply(client: httpx.Client, store: str, item: str, quantity: int, **headers: str) -> Any:
    body = {"store_id": store, "item_id": item, "supplier_id": "sup-1", "quantity": quantity}
    return client.post(RECEIVE, json=body, headers={"Wait-Stage": "projected", **headers})


def stock_path(store: str, item: str) -> str:
    return f"/retail/store_stock/{quote(f'{store}/{item}', safe='')}/state"


def routes(command_id: str, store: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """One route of each kind: a command, a state, a query, a command lookup."""
    return [
        ("POST", REGISTER, {"supplier_id": fresh("sup"), "name": "Acme"}),
        ("GET", stock_path(store, "item-1"), None),
        ("GET", "/retail/queries/current_stock", None),
        ("GET", f"/commands/{command_id}", None),
    ]


# ---------------------------------------------------------------------- 401


def test_every_route_needs_a_credential(secured: Secured, tenant_a: httpx.Client) -> None:
    store = fresh("store")
    sent = supply(tenant_a, store, "item-1", 3)
    assert sent.status_code == 200, sent.text
    with secured.client(None) as anonymous:
        for method, path, body in routes(sent.json()["command_id"], store):
            answer = anonymous.request(method, path, json=body)
            problem(answer, 401)
            assert answer.headers["www-authenticate"].startswith("Bearer"), path


def test_a_bad_credential_is_401_on_every_route(secured: Secured, tenant_a: httpx.Client) -> None:
    store = fresh("store")
    sent = supply(tenant_a, store, "item-1", 3)
    assert sent.status_code == 200, sent.text
    assert len(secured.bad) >= 3
    for why, headers in secured.bad.items():
        with secured.stack.client(headers=headers) as client:
            for method, path, body in routes(sent.json()["command_id"], store):
                answer = client.request(method, path, json=body)
                assert answer.status_code == 401, (why, path, answer.text)
                assert problem(answer, 401)["type"] == "urn:streamfold:problem:unauthorized"


def not_routed(store: str) -> list[tuple[str, str, bytes | None]]:
    """Requests the router or the body reader would refuse: no route, an unencoded ``/`` in
    an aggregate id, a method the path has not, a body over the limit."""
    return [
        ("GET", "/no/such/route", None),
        ("GET", f"/retail/store_stock/{store}/item-1/state", None),
        ("DELETE", REGISTER, None),
        ("POST", REGISTER, b"{" + b" " * (2 * 1024 * 1024) + b"}"),
    ]


def test_a_request_is_authenticated_before_it_is_routed_or_read(secured: Secured) -> None:
    """A caller without a good credential learns nothing of the routes: 401 even where the
    answer would otherwise be 404, 405 or 413 (the probes and the docs stay open)."""
    store = fresh("store")
    for why, headers in {"none": {}, **secured.bad}.items():
        with secured.stack.client(headers=headers) as client:
            for method, path, body in not_routed(store):
                answer = client.request(method, path, content=body)
                assert answer.status_code == 401, (why, method, path, answer.text)
                assert problem(answer, 401)["type"] == "urn:streamfold:problem:unauthorized"
            for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
                assert client.get(path).status_code == 200, (why, path)
            assert client.get("/docs/static/swagger-ui.css").status_code == 200, why
    with secured.client("tenant-a") as tenant_a:
        answers = [
            tenant_a.request(method, path, content=body).status_code
            for method, path, body in not_routed(store)
        ]
    assert answers == [404, 404, 405, 413]


def test_a_good_credential_is_answered_on_every_route(
    secured: Secured, tenant_a: httpx.Client
) -> None:
    store = fresh("store")
    sent = supply(tenant_a, store, "item-1", 3)
    assert sent.status_code == 200, sent.text
    assert sent.json()["outcome"] == "accepted"
    for method, path, body in routes(sent.json()["command_id"], store):
        answer = tenant_a.request(method, path, json=body)
        assert answer.status_code == 200, (path, answer.text)
    state = tenant_a.get(stock_path(store, "item-1")).json()
    assert state["tenant"] == "tenant-a"
    assert state["state"]["on_hand"] == 3


def test_an_api_key_is_also_taken_from_x_api_key(api_key_stack: Secured) -> None:
    with api_key_stack.stack.client(headers={"X-API-Key": KEYS["tenant-b"]}) as client:
        store = fresh("store")
        sent = supply(client, store, "item-1", 1)
        assert sent.status_code == 200, sent.text
        assert client.get(stock_path(store, "item-1")).json()["tenant"] == "tenant-b"


# ---------------------------------------------------------------------- 403 and isolation


def test_a_tenant_header_naming_another_tenant_is_403(tenant_a: httpx.Client) -> None:
    store = fresh("store")
    body = problem(supply(tenant_a, store, "item-1", 1, Tenant="tenant-b"), 403)
    assert body["code"] == "tenant_mismatch"
    problem(tenant_a.get(stock_path(store, "item-1")), 404)  # nothing was sent
    same = supply(tenant_a, store, "item-1", 1, Tenant="tenant-a")
    assert same.status_code == 200, same.text


def test_another_tenants_aggregate_is_not_found(
    tenant_a: httpx.Client, tenant_b: httpx.Client
) -> None:
    store = fresh("store")
    sent = supply(tenant_a, store, "item-1", 4)
    assert sent.status_code == 200, sent.text
    assert tenant_a.get(stock_path(store, "item-1")).status_code == 200
    problem(tenant_b.get(stock_path(store, "item-1")), 404)
    problem(tenant_b.get(f"/commands/{sent.json()['command_id']}"), 404)
    assert tenant_a.get(f"/commands/{sent.json()['command_id']}").status_code == 200


def test_another_tenants_aggregate_cannot_be_changed(
    tenant_a: httpx.Client, tenant_b: httpx.Client
) -> None:
    store = fresh("store")
    assert supply(tenant_a, store, "item-1", 4).status_code == 200
    sale = {
        "store_id": store,
        "item_id": "item-1",
        "sale_id": fresh("sale"),
        "quantity": 1,
        "unit_price": "1.00",
    }
    refused = problem(tenant_b.post(SALE, json=sale, headers={"Wait-Stage": "projected"}), 403)
    assert refused["code"] == "tenant_mismatch"
    state = tenant_a.get(stock_path(store, "item-1")).json()
    assert state["version"] == 1
    assert state["state"]["on_hand"] == 4


def test_a_query_shows_a_tenant_only_its_own_rows(
    tenant_a: httpx.Client, tenant_b: httpx.Client
) -> None:
    store_a, store_b = fresh("store-a"), fresh("store-b")
    assert supply(tenant_a, store_a, "item-1", 1).status_code == 200
    assert supply(tenant_b, store_b, "item-1", 2).status_code == 200

    def stores(client: httpx.Client, name: str, **params: Any) -> set[str]:
        answer = client.get(f"/retail/queries/{name}", params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        return {dict(zip(body["columns"], row, strict=True))["store_id"] for row in body["rows"]}

    seen_by_a = stores(tenant_a, "current_stock")
    seen_by_b = stores(tenant_b, "current_stock")
    assert store_a in seen_by_a and store_b not in seen_by_a
    assert store_b in seen_by_b and store_a not in seen_by_b
    assert stores(tenant_b, "current_stock", store_id=store_a) == set()
    assert store_a not in stores(tenant_b, "low_stock", threshold=100)
    assert store_a in stores(tenant_a, "low_stock", threshold=100)
