"""The Given / When / Expect kit: what it checks and how its failures read."""

from __future__ import annotations

import re
from contextlib import AbstractContextManager

import pytest

from streamfold.domain import BoundedContext, Command, Event, Rejected, State
from streamfold.testing import given
from streamfold.testing.gwt import diff

pytestmark = pytest.mark.unit


class Line(State):
    sku: str
    qty: int


class Cart(State):
    cart: str
    lines: list[Line] = []
    tags: dict[str, str] = {}


class Add(Command):
    cart: str
    sku: str
    qty: int


class Added(Event):
    cart: str
    sku: str
    qty: int


class Noted(Event):
    cart: str


shop = BoundedContext("shop", namespace="io.shop")
carts = shop.aggregate("cart", state=Cart, id="cart")


@carts.decides(Add, creates=True)
def add(state: Cart | None, cmd: Add) -> list[Event]:
    if cmd.qty <= 0:
        raise Rejected("bad_qty", f"quantity {cmd.qty} is not positive")
    return [Added(cart=cmd.cart, sku=cmd.sku, qty=cmd.qty), Noted(cart=cmd.cart)]


@carts.evolves(Added)
def added(state: Cart | None, event: Added) -> Cart:
    lines = [*(state.lines if state else []), Line(sku=event.sku, qty=event.qty)]
    return Cart(cart=event.cart, lines=lines)


@carts.evolves(Noted)
def noted(state: Cart, event: Noted) -> Cart:
    return state


ADD = Add(cart="c", sku="x", qty=2)
EVENTS = (Added(cart="c", sku="x", qty=2), Noted(cart="c"))


def fails(match: str) -> AbstractContextManager[pytest.ExceptionInfo[AssertionError]]:
    return pytest.raises(AssertionError, match=re.escape(match))


def test_passing_expectations_chain() -> None:
    outcome = given(carts).when(ADD)
    outcome.expect_events(*EVENTS).expect_version(2).expect_deleted(False).expect_state(
        Cart(cart="c", lines=[Line(sku="x", qty=2)])
    )
    assert outcome.events == EVENTS
    assert outcome.state == Cart(cart="c", lines=[Line(sku="x", qty=2)])


def test_history_as_events_a_list_or_a_state() -> None:
    first = Added(cart="c", sku="a", qty=1)
    given(carts, first).when(ADD).expect_version(3)
    given(carts, [first, Noted(cart="c")]).when(ADD).expect_version(4)
    given(carts, Cart(cart="c"), version=7).when(ADD).expect_version(9)
    given(carts, Cart(cart="c")).when(ADD).expect_version(3)
    given(carts, first, version=5, deleted=True).when(ADD).expect_rejected("aggregate_deleted")


def test_given_refuses_mixed_or_foreign_history() -> None:
    with pytest.raises(TypeError, match="either events or a single state"):
        given(carts, Cart(cart="c"), Noted(cart="c"))

    class Other(State):
        x: int

    with pytest.raises(TypeError, match="has state Cart"):
        given(carts, Other(x=1))


def test_event_count_is_checked_first() -> None:
    with fails("expected 1 event(s), got 2: ['Added', 'Noted']"):
        given(carts).when(ADD).expect_events(Added(cart="c", sku="x", qty=2))


def test_failure_names_event_index_and_field() -> None:
    with fails("event 1 (Noted): cart: expected 'd', got 'c'"):
        given(carts).when(ADD).expect_events(EVENTS[0], Noted(cart="d"))


def test_failure_names_a_wrong_event_type() -> None:
    with fails("event 1 (Added): expected Added, got Noted"):
        given(carts).when(ADD).expect_events(EVENTS[0], EVENTS[0])


def test_state_failure_names_the_nested_path() -> None:
    with fails("state: lines[0].qty: expected 3, got 2"):
        given(carts).when(ADD).expect_state(Cart(cart="c", lines=[Line(sku="x", qty=3)]))
    with fails("state: lines: expected 0 item(s), got 1"):
        given(carts).when(ADD).expect_state(Cart(cart="c"))


def test_rejection_expectations() -> None:
    bad = Add(cart="c", sku="x", qty=0)
    given(carts).when(bad).expect_rejected("bad_qty").expect_rejected("bad_qty", "quantity 0")
    with fails("expected rejection 'other', got 'bad_qty': quantity 0 is not positive"):
        given(carts).when(bad).expect_rejected("other")
    with fails("does not contain 'nope'"):
        given(carts).when(bad).expect_rejected("bad_qty", "nope")
    with fails("expected rejection 'bad_qty', but it was accepted: ['Added', 'Noted']"):
        given(carts).when(ADD).expect_rejected("bad_qty")
    with fails("expected 1 event(s), but Add was rejected: bad_qty: quantity 0"):
        given(carts).when(bad).expect_events(EVENTS[0])


def test_version_and_deleted_failures() -> None:
    with fails("expected version 5, got 2"):
        given(carts).when(ADD).expect_version(5)
    with fails("expected deleted=True"):
        given(carts).when(ADD).expect_deleted()


def test_diff_of_mappings_and_values() -> None:
    assert diff({"a": 1}, {"a": 1}) == []
    assert diff({"a": 1}, {"a": 2, "b": 3}) == [
        "['a']: expected 1, got 2",
        "['b']: expected None, got 3",
    ]
    assert diff(1, 1.0) == ["expected 1, got 1.0"]
