"""A tiny domain whose decide function fails on demand and whose state grows on demand,
for dead-letter tests."""

from __future__ import annotations

from pydantic import Field

from streamfold.domain import BoundedContext, Command, Event, State

faulty = BoundedContext("faulty", namespace="io.streamfold.faulty")


class Poke(Command):
    widget_id: str
    explode: bool = False
    #: Characters the widget's payload grows by (a state can be made too large to produce).
    grow: int = Field(default=0, ge=0)


class Poked(Event):
    widget_id: str
    grow: int = 0


class Widget(State):
    widget_id: str
    pokes: int
    payload: str = ""


widgets = faulty.aggregate("widget", state=Widget, id="widget_id")


@widgets.decides(Poke, creates=True)
def poke(state: Widget | None, cmd: Poke) -> Poked:
    if cmd.explode:
        raise RuntimeError(f"widget {cmd.widget_id} exploded")
    return Poked(widget_id=cmd.widget_id, grow=cmd.grow)


@widgets.evolves(Poked)
def poked(state: Widget | None, event: Poked) -> Widget:
    pokes, payload = (state.pokes, state.payload) if state else (0, "")
    return Widget(widget_id=event.widget_id, pokes=pokes + 1, payload=payload + "x" * event.grow)
