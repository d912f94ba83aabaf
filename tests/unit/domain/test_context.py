"""Bounded contexts and the naming module."""

from __future__ import annotations

import pytest

from streamfold.domain import BoundedContext, Command, Event, State
from streamfold.domain.naming import aggregate_topics, context_topics, subject_name
from streamfold.errors import ConfigurationError

pytestmark = pytest.mark.unit


class Ship(Command):
    order: str


class Shipped(Event):
    order: str


class Order(State):
    order: str


class Invoice(State):
    order: str


def test_topic_names() -> None:
    topics = aggregate_topics("shop", "order")
    assert topics.all() == (
        "shop.order.commands",
        "shop.order.events",
        "shop.order.state",
        "shop.order.results",
        "shop.order.changelog",
    )
    assert context_topics("shop").dlq == "shop.dlq"
    assert context_topics("shop").projected == "shop.projected"
    assert (
        subject_name("shop.order.events", "io.shop.Shipped") == "shop.order.events-io.shop.Shipped"
    )


@pytest.mark.parametrize("name", ["Shop", "1shop", "shop-x", "", "shop.x"])
def test_names_must_be_snake_case(name: str) -> None:
    with pytest.raises(ConfigurationError, match="snake_case"):
        BoundedContext(name, namespace="io.shop")


def test_namespace_must_be_dotted_identifiers() -> None:
    with pytest.raises(ConfigurationError, match="namespace"):
        BoundedContext("shop", namespace="io.shop-x")


def test_context_groups_aggregates_and_their_messages() -> None:
    shop = BoundedContext("shop", namespace="io.shop")
    orders = shop.aggregate("order", state=Order, id="order")
    orders.decides(Ship, creates=True)(lambda s, c: Shipped(order=c.order))
    orders.evolves(Shipped, creates=True)(lambda s, e: Order(order=e.order))
    invoices = shop.aggregate("invoice", state=Invoice, id="order")
    invoices.evolves(Shipped, creates=True)(lambda s, e: Invoice(order=e.order))

    assert shop.aggregates == (orders, invoices)
    assert shop.get("invoice") is invoices
    assert shop.aggregate_for(Ship) is orders
    assert shop.commands() == (Ship,)
    assert shop.events() == (Shipped,)  # an event may fold into several aggregates
    assert shop.states() == (Order, Invoice)
    assert shop.full_name(Ship) == "io.shop.Ship"
    assert "shop" in repr(shop) and "order" in repr(orders)


def test_lookups_name_what_is_missing() -> None:
    shop = BoundedContext("shop", namespace="io.shop")
    with pytest.raises(ConfigurationError, match="no aggregate 'x'"):
        shop.get("x")
    with pytest.raises(ConfigurationError, match="handles Ship"):
        shop.aggregate_for(Ship)


def test_a_command_belongs_to_one_aggregate() -> None:
    shop = BoundedContext("shop", namespace="io.shop")
    shop.aggregate("order", state=Order, id="order").decides(Ship)(lambda s, c: [])
    invoices = shop.aggregate("invoice", state=Invoice, id="order")
    with pytest.raises(ConfigurationError, match="belongs to one aggregate"):
        invoices.decides(Ship)(lambda s, c: [])


def test_aggregate_names_and_record_names_are_unique() -> None:
    shop = BoundedContext("shop", namespace="io.shop")
    shop.aggregate("order", state=Order, id="order")
    with pytest.raises(ConfigurationError, match="already has an aggregate"):
        shop.aggregate("order", state=Invoice, id="order")

    class Ship2(Command):
        order: str

    Ship2.__name__ = "Ship"
    shop.get("order").decides(Ship)(lambda s, c: [])
    with pytest.raises(ConfigurationError, match="record names must be unique"):
        shop.aggregate("invoice", state=Invoice, id="order").decides(Ship2)(lambda s, c: [])
