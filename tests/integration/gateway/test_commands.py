"""The gateway's HTTP API over plain httpx, against a real retail stack.

Commands go through the real broker to the real worker; state and queries come from the
sink's chDB. Every id is fresh per test, so the tests share the module's stack safely.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from topologies.retail.domain import retail

from streamfold.domain.naming import snake_case

from .conftest import RetailStack

pytestmark = pytest.mark.integration

PROBLEM_JSON = "application/problem+json"
REGISTER = "/retail/supplier/register_supplier"
RECEIVE = "/retail/store_stock/receive_supply"
SALE = "/retail/store_stock/record_sale"


def fresh(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def http(stack: RetailStack) -> Iterator[httpx.Client]:
    with stack.client() as client:
        yield client


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The problem body of ``response``, after checking its status and media type."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:streamfold:problem:")
    assert body["title"]
    return body


def error_locations(body: dict[str, Any]) -> list[list[str | int]]:
    return [error["loc"] for error in body["errors"]]


def register(http: httpx.Client, supplier_id: str, **headers: str) -> httpx.Response:
    return http.post(REGISTER, json={"supplier_id": supplier_id, "name": "Acme"}, headers=headers)


def receive(
    http: httpx.Client, store: str, item: str, quantity: int, **headers: str
) -> httpx.Response:
    body = {"store_id": store, "item_id": item, "supplier_id": "sup-1", "quantity": quantity}
    return http.post(RECEIVE, json=body, headers=headers)


def sale(
    http: httpx.Client, store: str, item: str, quantity: int, **headers: str
) -> httpx.Response:
    body = {
        "store_id": store,
        "item_id": item,
        "sale_id": fresh("sale"),
        "quantity": quantity,
        "unit_price": "2.50",
    }
    return http.post(SALE, json=body, headers=headers)


def stock_path(store: str, item: str) -> str:
    return f"/retail/store_stock/{quote(f'{store}/{item}', safe='')}/state"


# ---------------------------------------------------------------------- accepted and rejected


def test_an_accepted_command_answers_its_outcome(http: httpx.Client) -> None:
    supplier = fresh("sup")
    response = register(http, supplier)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["outcome"] == "accepted"
    assert body["stage"] == "processed"
    assert body["version"] == 1
    assert body["event_types"] == ["SupplierRegistered"]
    assert body["aggregate_type"] == "supplier"
    assert body["aggregate_id"] == supplier
    assert body["command_type"] == "RegisterSupplier"
    assert body["replay"] is False
    assert response.headers["location"] == f"/commands/{body['command_id']}"


def test_a_second_registration_is_a_409_problem_with_the_domains_code(
    http: httpx.Client,
) -> None:
    supplier = fresh("sup")
    assert register(http, supplier).status_code == 200
    body = problem(register(http, supplier), 409)
    assert body["code"] == "already_exists"
    assert body["current_version"] == 1
    assert supplier in body["detail"]
    assert body["command_id"]


def test_wait_stage_sent_answers_once_the_broker_has_it(http: httpx.Client) -> None:
    response = register(http, fresh("sup"), **{"Wait-Stage": "sent"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["stage"] == "sent"
    assert body["outcome"] is None
    # What the gateway knows of it a little later: the worker answered it.
    follow = http.get(f"/commands/{body['command_id']}", headers={"Wait-Stage": "processed"})
    assert follow.status_code == 200, follow.text
    assert follow.json()["outcome"] == "accepted"


def test_wait_stage_projected_makes_the_state_readable(http: httpx.Client) -> None:
    supplier = fresh("sup")
    response = register(http, supplier, **{"Wait-Stage": "projected"})
    assert response.status_code == 200, response.text
    assert response.json()["stage"] == "projected"
    assert response.json()["outcome"] == "accepted"

    state = http.get(f"/retail/supplier/{supplier}/state")
    assert state.status_code == 200, state.text
    assert state.headers["etag"] == '"1"'
    body = state.json()
    assert body["version"] == 1
    assert body["aggregate_type"] == "supplier"
    assert body["aggregate_id"] == supplier
    assert body["state"] == {"supplier_id": supplier, "name": "Acme"}

    behind = problem(http.get(f"/retail/supplier/{supplier}/state?min_version=2"), 409)
    assert behind["code"] == "projection_behind"
    assert behind["current_version"] == 1

    at_one = http.get(f"/retail/supplier/{supplier}/state", params={"version": 1})
    assert at_one.status_code == 200, at_one.text
    assert at_one.json()["version"] == 1
    assert at_one.json()["state"]["name"] == "Acme"

    assert problem(http.get(f"/retail/supplier/{supplier}/state?version=2"), 404)
    assert problem(http.get(f"/retail/supplier/{fresh('nobody')}/state"), 404)
    # asked for a version when nothing is projected yet: behind, not unknown
    early = problem(http.get(f"/retail/supplier/{fresh('nobody')}/state?min_version=1"), 409)
    assert (early["code"], early["current_version"]) == ("projection_behind", 0)


def test_the_states_updated_at_names_its_time_zone(http: httpx.Client) -> None:
    """OpenAPI ``format: date-time`` is RFC 3339, which requires an offset."""
    supplier = fresh("sup")
    assert register(http, supplier, **{"Wait-Stage": "projected"}).status_code == 200
    updated_at = http.get(f"/retail/supplier/{supplier}/state").json()["updated_at"]
    parsed = datetime.fromisoformat(updated_at)
    assert parsed.tzinfo is not None, updated_at
    assert abs(parsed - datetime.now(UTC)) < timedelta(minutes=5)


# ------------------------------------------------------- store_stock: an id with a slash


def test_store_stock_supply_then_sale_shows_on_hand(http: httpx.Client) -> None:
    store, item = fresh("store"), fresh("item")
    supplied = receive(http, store, item, 10)
    assert supplied.status_code == 200, supplied.text
    assert supplied.json()["aggregate_id"] == f"{store}/{item}"
    assert supplied.json()["version"] == 1
    sold = sale(http, store, item, 3, **{"Wait-Stage": "projected"})
    assert sold.status_code == 200, sold.text
    assert sold.json()["version"] == 2
    assert sold.json()["event_types"] == ["SaleRecorded"]

    state = http.get(stock_path(store, item), params={"min_version": 2})
    assert state.status_code == 200, state.text
    body = state.json()
    assert body["aggregate_id"] == f"{store}/{item}"
    assert body["version"] == 2
    assert state.headers["etag"] == '"2"'
    assert body["state"]["on_hand"] == 7
    assert body["state"]["store_id"] == store and body["state"]["item_id"] == item
    assert float(body["state"]["sold_amount"]) == 7.5


def test_selling_more_than_on_hand_is_rejected_with_insufficient_stock(
    http: httpx.Client,
) -> None:
    store, item = fresh("store"), fresh("item")
    assert receive(http, store, item, 2).status_code == 200
    body = problem(sale(http, store, item, 5), 409)
    assert body["code"] == "insufficient_stock"
    assert body["current_version"] == 1
    assert "2 on hand" in body["detail"]


def test_an_expected_version_mismatch_is_a_version_conflict(http: httpx.Client) -> None:
    store, item = fresh("store"), fresh("item")
    assert receive(http, store, item, 5).status_code == 200
    body = problem(sale(http, store, item, 1, **{"Expected-Version": "3"}), 409)
    assert body["code"] == "version_conflict"
    assert body["current_version"] == 1
    matching = sale(http, store, item, 1, **{"Expected-Version": "1"})
    assert matching.status_code == 200, matching.text
    assert matching.json()["version"] == 2


def test_the_same_command_id_twice_is_a_replay_with_no_second_effect(
    http: httpx.Client,
) -> None:
    store, item = fresh("store"), fresh("item")
    command_id = str(uuid.uuid4())
    headers = {"Command-Id": command_id, "Wait-Stage": "projected"}
    first = receive(http, store, item, 4, **headers)
    assert first.status_code == 200, first.text
    second = receive(http, store, item, 4, **headers)
    assert second.status_code == 200, second.text
    one, two = first.json(), second.json()
    assert one["replay"] is False
    assert two["replay"] is True
    assert one["command_id"] == two["command_id"] == command_id
    for key in ("outcome", "version", "event_types", "aggregate_id"):
        assert one[key] == two[key], key
    # A later command lands on version 2: the replay made no version of its own.
    after = receive(http, store, item, 1, **{"Wait-Stage": "projected"})
    assert after.json()["version"] == 2
    state = http.get(stock_path(store, item)).json()
    assert state["version"] == 2
    assert state["state"]["on_hand"] == 5


def test_a_command_id_is_a_uuid_and_anything_else_is_refused_before_sending(
    http: httpx.Client,
) -> None:
    """``Command-Id`` is a UUID (the worker's command ids are): any other key is a 422 naming
    the header, and nothing was sent; an upper-case UUID is the same id as its lower case."""
    refused = problem(register(http, fresh("sup"), **{"Command-Id": "order-1:line.1"}), 422)
    assert ["header", "Command-Id"] in error_locations(refused)
    command_id = uuid.uuid4()
    response = register(http, fresh("sup"), **{"Command-Id": str(command_id).upper()})
    assert response.status_code == 200, response.text
    assert response.json()["command_id"] == str(command_id)
    assert response.json()["outcome"] == "accepted"


# ---------------------------------------------------------------------- invalid requests


def test_a_missing_field_is_a_422_naming_it(http: httpx.Client) -> None:
    body = problem(http.post(REGISTER, json={"supplier_id": fresh("sup")}), 422)
    assert ["body", "name"] in error_locations(body)
    assert "name" in body["detail"]


def test_a_wrong_type_is_a_422_naming_the_field(http: httpx.Client) -> None:
    payload = {
        "store_id": "s",
        "item_id": "i",
        "supplier_id": "p",
        "quantity": "many",
    }
    body = problem(http.post(RECEIVE, json=payload), 422)
    assert error_locations(body) == [["body", "quantity"]]


def test_a_bad_wait_stage_is_a_422_naming_the_header(http: httpx.Client) -> None:
    body = problem(register(http, fresh("sup"), **{"Wait-Stage": "eventually"}), 422)
    assert error_locations(body) == [["header", "Wait-Stage"]]


def test_a_negative_wait_timeout_is_a_422_naming_the_header(http: httpx.Client) -> None:
    body = problem(register(http, fresh("sup"), **{"Wait-Timeout-Ms": "-1"}), 422)
    assert error_locations(body) == [["header", "Wait-Timeout-Ms"]]


def test_an_empty_aggregate_id_is_a_422_naming_the_field(http: httpx.Client) -> None:
    """The body matches the model (``supplier_id: str``), but no aggregate has id ``""``."""
    body = problem(http.post(REGISTER, json={"supplier_id": "", "name": "Acme"}), 422)
    assert ["body", "supplier_id"] in error_locations(body)


def test_an_undecodable_body_is_a_problem_with_a_declared_status(http: httpx.Client) -> None:
    """Bytes that are not UTF-8 JSON: a 4xx problem the OpenAPI of the route declares."""
    response = http.post(
        REGISTER, content=b"\xff\x0eH\x00", headers={"Content-Type": "application/json"}
    )
    declared = http.get("/openapi.json").json()["paths"][REGISTER]["post"]["responses"]
    assert 400 <= response.status_code < 500, response.text
    assert str(response.status_code) in declared, (response.status_code, sorted(declared))
    problem(response, response.status_code)


def test_an_unknown_command_path_is_a_404_problem(http: httpx.Client) -> None:
    body = problem(http.post("/retail/supplier/fire_supplier", json={"supplier_id": "x"}), 404)
    assert body["instance"] == "/retail/supplier/fire_supplier"


def test_a_query_with_no_rows_still_names_its_columns(http: httpx.Client) -> None:
    answer = http.get("/retail/queries/current_stock", params={"store_id": fresh("empty")})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["rows"] == []
    assert body["columns"] == ["store_id", "item_id", "on_hand", "sold_amount"]


# ---------------------------------------------------------------------- waits and streams


def test_a_zero_wait_answers_202_and_the_command_can_be_waited_on(
    http: httpx.Client,
) -> None:
    supplier = fresh("sup")
    response = register(http, supplier, **{"Wait-Stage": "processed", "Wait-Timeout-Ms": "0"})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["stage"] == "sent"
    assert body["outcome"] is None
    location = response.headers["location"]
    assert location == f"/commands/{body['command_id']}"

    waited = http.get(location, headers={"Wait-Stage": "processed", "Wait-Timeout-Ms": "20000"})
    assert waited.status_code == 200, waited.text
    outcome = waited.json()
    assert outcome["command_id"] == body["command_id"]
    assert outcome["outcome"] == "accepted"
    assert outcome["aggregate_id"] == supplier
    assert outcome["version"] == 1


def test_an_unknown_command_id_is_a_404_problem_and_a_malformed_one_a_422(
    http: httpx.Client,
) -> None:
    assert ["path", "command_id"] in error_locations(problem(http.get("/commands/x-1"), 422))
    body = problem(http.get(f"/commands/{uuid.uuid4()}"), 404)
    assert body["type"] == "urn:streamfold:problem:unknown-command"


def stream_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """Parse a ``text/event-stream`` body into (event, data) pairs."""
    events: list[tuple[str, dict[str, Any]]] = []
    kind: str | None = None
    data: list[str] = []
    for line in response.iter_lines():
        if line.startswith("event:"):
            kind = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())
        elif line == "" and kind is not None:
            events.append((kind, json.loads("\n".join(data))))
            kind, data = None, []
    if kind is not None:
        events.append((kind, json.loads("\n".join(data))))
    return events


def test_an_event_stream_reports_each_stage_then_done(http: httpx.Client) -> None:
    supplier = fresh("sup")
    with http.stream(
        "POST",
        REGISTER,
        json={"supplier_id": supplier, "name": "Acme"},
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = stream_events(response)
    assert [kind for kind, _ in events] == ["sent", "processed", "done"]
    assert events[1][1]["outcome"] == "accepted"
    assert events[-1][1]["version"] == 1
    assert events[-1][1]["location"] == f"/commands/{events[-1][1]['command_id']}"


def test_an_event_stream_asked_for_projected_reports_projected(http: httpx.Client) -> None:
    with http.stream(
        "POST",
        REGISTER,
        json={"supplier_id": fresh("sup"), "name": "Acme"},
        headers={"Accept": "text/event-stream", "Wait-Stage": "projected"},
    ) as response:
        assert response.status_code == 200
        events = stream_events(response)
    assert [kind for kind, _ in events] == ["sent", "processed", "projected", "done"]
    assert events[-1][1]["stage"] == "projected"


# ---------------------------------------------------------------------- the contract


def retail_commands() -> list[tuple[str, type[Any]]]:
    return [(a.name, command) for a in retail.aggregates for command in a.commands]


def test_the_openapi_lists_every_retail_command_with_its_model(http: httpx.Client) -> None:
    openapi = http.get("/openapi.json").json()
    schemas = openapi["components"]["schemas"]
    commands = retail_commands()
    assert {command.__name__ for _, command in commands} >= {
        "RegisterSupplier",
        "AddItem",
        "ChangePrice",
        "ReceiveSupply",
        "RecordSale",
        "AdjustStock",
    }
    for aggregate, command in commands:
        path = f"/retail/{aggregate}/{snake_case(command.__name__)}"
        assert path in openapi["paths"], path
        operation = openapi["paths"][path]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{command.__name__}"}, path
        assert set(command.model_fields) <= set(schemas[command.__name__]["properties"]), path
        responses = operation["responses"]
        assert {"200", "202", "409", "422", "503"} <= set(responses), path
        assert PROBLEM_JSON in responses["409"]["content"], path
    assert set(schemas["Problem"]["properties"]) >= {"type", "title", "status", "code"}
    for each in retail.aggregates:
        assert f"/retail/{each.name}/{{id}}/state" in openapi["paths"]
    assert "/retail/queries/low_stock" in openapi["paths"]


def test_the_openapi_gives_problem_answers_the_problem_schema(http: httpx.Client) -> None:
    """Problems are served as application/problem+json: that is where the schema must be."""
    openapi = http.get("/openapi.json").json()
    wrong, checked = [], 0
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if not status.startswith(("4", "5")):
                    continue
                checked += 1
                content = response.get("content", {})
                schema = content.get(PROBLEM_JSON, {}).get("schema")
                if schema != {"$ref": "#/components/schemas/Problem"}:
                    wrong.append(f"{method.upper()} {path} {status}: {sorted(content)}")
    assert checked >= 20
    assert wrong == []
