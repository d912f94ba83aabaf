"""A tiny domain whose decide function fails on demand, for dead-letter tests."""

from __future__ import annotations

from streamfold.domain import BoundedContext, Command, Event, State

faulty = BoundedContext("faulty", namespace="io.streamfold.faulty")


class Poke(Command):
    widget_id: str
    explode: bool = False


class Poked(Event):
    widget_id: str


class Widget(State):
    widget_id: str
    pokes: int


widgets = faulty.aggregate("widget", state=Widget, id="widget_id")


@widgets.decides(Poke, creates=True)
def poke(state: Widget | None, cmd: Poke) -> Poked:
    if cmd.explode:
        raise RuntimeError(f"widget {cmd.widget_id} exploded")
    return Poked(widget_id=cmd.widget_id)


@widgets.evolves(Poked, creates=True)
def poked(state: Widget | None, event: Poked) -> Widget:
    return Widget(widget_id=event.widget_id, pokes=(state.pokes if state else 0) + 1)
