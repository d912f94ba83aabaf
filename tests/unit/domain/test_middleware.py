"""Command middleware: BoundedContext.middleware, run by Aggregate.handle around steps 2-7."""

from __future__ import annotations

from typing import Any

import pytest

from streamfold.domain import BoundedContext, Command, Event, Metadata, Rejected, State
from streamfold.domain.aggregate import Decision, Next
from streamfold.errors import ConfigurationError, HandlerContractError
from streamfold.testing import given

pytestmark = pytest.mark.unit


class Open(Command):
    account: str


class Deposit(Command):
    account: str
    amount: int


class Withdraw(Command):
    account: str
    amount: int


class Opened(Event):
    account: str


class Deposited(Event):
    account: str
    amount: int
    by: str | None = None


class Account(State):
    account: str
    balance: int = 0


OPEN = Account(account="a1")


def make(
    *middleware: Any, before: bool = False, log: list[str] | None = None
) -> tuple[BoundedContext, Any]:
    """A fresh bank context; its middleware declared after the aggregate (or ``before``)."""
    bank = BoundedContext("bank", namespace="io.test.bank")
    if before:
        for fn in middleware:
            bank.middleware(fn)
    accounts = bank.aggregate("account", state=Account, id="account", soft_delete=True)

    @accounts.decides(Open, creates=True)
    def open_account(state: Account | None, cmd: Open) -> Opened:
        return Opened(account=cmd.account)

    @accounts.decides(Deposit)
    def deposit(state: Account, cmd: Deposit, meta: Metadata) -> Deposited:
        if log is not None:
            log.append("decide")
        return Deposited(account=cmd.account, amount=cmd.amount, by=meta.principal)

    @accounts.decides(Withdraw)
    def withdraw(state: Account, cmd: Withdraw) -> Deposited:
        raise AssertionError("not used")

    @accounts.evolves(Opened, creates=True)
    def opened(state: Account | None, event: Opened) -> Account:
        return Account(account=event.account)

    @accounts.evolves(Deposited)
    def deposited(state: Account, event: Deposited) -> Account:
        return state.model_copy(update={"balance": state.balance + event.amount})

    if not before:
        for fn in middleware:
            bank.middleware(fn)
    return bank, accounts


def recording(name: str, log: list[str]) -> Any:
    def middleware(cmd: Command, meta: Metadata, state: Any, next: Next) -> Decision[Any]:
        log.append(f"{name} in")
        decision = next(cmd, meta)
        log.append(f"{name} out")
        return decision

    return middleware


def passthrough(cmd: Command, meta: Metadata, state: Any, next: Next) -> Decision[Any]:
    return next(cmd, meta)


DEPOSIT = Deposit(account="a1", amount=5)


def test_the_first_declared_middleware_is_outermost() -> None:
    log: list[str] = []
    first, second = recording("first", log), recording("second", log)
    bank, accounts = make(first, second, log=log)
    assert bank.middlewares == (first, second)
    decision = accounts.handle(OPEN, 1, DEPOSIT, Metadata(principal="alice"))
    assert log == ["first in", "second in", "decide", "second out", "first out"]
    assert decision.events == (Deposited(account="a1", amount=5, by="alice"),)
    assert decision.version == 2


def test_middleware_declared_before_the_aggregate_applies_too() -> None:
    log: list[str] = []
    _, accounts = make(recording("m", log), before=True, log=log)
    accounts.handle(OPEN, 1, DEPOSIT)
    assert log == ["m in", "decide", "m out"]


def test_middleware_declared_after_a_handle_applies_from_then_on() -> None:
    log: list[str] = []
    bank, accounts = make(log=log)
    accounts.handle(OPEN, 1, DEPOSIT)
    bank.middleware(recording("late", log))
    accounts.handle(OPEN, 1, DEPOSIT)
    assert log == ["decide", "late in", "decide", "late out"]


def test_middleware_gets_the_current_state() -> None:
    seen: list[Any] = []

    def spy(cmd: Command, meta: Metadata, state: Any, next: Next) -> Decision[Any]:
        seen.append(state)
        return next(cmd, meta)

    _, accounts = make(spy)
    accounts.handle(OPEN, 1, DEPOSIT)
    accounts.handle(None, 0, Open(account="a2"))
    assert seen == [OPEN, None]


def test_a_rejection_from_middleware_is_a_normal_rejection() -> None:
    log: list[str] = []

    def forbid(cmd: Command, meta: Metadata, state: Any, next: Next) -> Decision[Any]:
        if meta.principal != "alice":
            raise Rejected("forbidden", f"{meta.principal} may not {type(cmd).__name__}")
        return next(cmd, meta)

    _, accounts = make(forbid, log=log)
    with pytest.raises(Rejected) as caught:
        accounts.handle(OPEN, 1, DEPOSIT, Metadata(principal="mallory"))
    assert caught.value.code == "forbidden"
    assert caught.value.message == "mallory may not Deposit"
    assert log == []
    assert accounts.handle(OPEN, 1, DEPOSIT, Metadata(principal="alice")).version == 2


def test_platform_rejections_pass_through_middleware() -> None:
    log: list[str] = []
    _, accounts = make(recording("m", log))
    with pytest.raises(Rejected) as caught:
        accounts.handle(OPEN, 1, DEPOSIT, Metadata(expected_version=7))
    assert caught.value.code == "version_conflict"
    with pytest.raises(Rejected) as missing:
        accounts.handle(None, 0, DEPOSIT)
    assert missing.value.code == "not_found"
    assert log == ["m in", "m in"]


def test_middleware_may_change_a_command_field() -> None:
    def double(cmd: Command, meta: Metadata, state: Any, next: Next) -> Decision[Any]:
        if isinstance(cmd, Deposit):
            cmd = cmd.model_copy(update={"amount": cmd.amount * 2})
        return next(cmd, meta)

    _, accounts = make(double)
    decision = accounts.handle(OPEN, 1, DEPOSIT)
    assert decision.events == (Deposited(account="a1", amount=10),)
    assert decision.state == Account(account="a1", balance=10)


def test_middleware_may_change_the_metadata() -> None:
    def stamp(cmd: Command, meta: Metadata, state: Any, next: Next) -> Decision[Any]:
        return next(cmd, meta.model_copy(update={"principal": "audited"}))

    _, accounts = make(stamp)
    decision = accounts.handle(OPEN, 1, DEPOSIT, Metadata(principal="alice"))
    assert decision.events == (Deposited(account="a1", amount=5, by="audited"),)


def test_middleware_may_not_change_the_aggregate_id() -> None:
    log: list[str] = []

    def redirect(cmd: Command, meta: Metadata, state: Any, next: Next) -> Decision[Any]:
        return next(cmd.model_copy(update={"account": "a2"}), meta)

    _, accounts = make(redirect, log=log)
    with pytest.raises(HandlerContractError, match="not its type or aggregate id"):
        accounts.handle(OPEN, 1, DEPOSIT)
    assert log == []


def test_middleware_may_not_change_the_command_type() -> None:
    def swap(cmd: Command, meta: Metadata, state: Any, next: Next) -> Decision[Any]:
        return next(Withdraw(account="a1", amount=5), meta)

    _, accounts = make(swap)
    with pytest.raises(HandlerContractError, match="not its type or aggregate id"):
        accounts.handle(OPEN, 1, DEPOSIT)


@pytest.mark.parametrize("returned", [None, "ok", [Deposited(account="a1", amount=1)]])
def test_middleware_must_return_a_decision(returned: Any) -> None:
    def careless(cmd: Command, meta: Metadata, state: Any, next: Next) -> Any:
        next(cmd, meta)
        return returned

    _, accounts = make(careless)
    with pytest.raises(HandlerContractError, match="must return the Decision of next"):
        accounts.handle(OPEN, 1, DEPOSIT)


def test_middleware_may_answer_without_calling_next() -> None:
    log: list[str] = []
    canned = Decision("a1", (), OPEN, 1)

    def short(cmd: Command, meta: Metadata, state: Any, next: Next) -> Decision[Any]:
        return canned

    _, accounts = make(short, log=log)
    assert accounts.handle(OPEN, 1, DEPOSIT) is canned
    assert log == []


def test_middleware_runs_around_built_in_soft_delete() -> None:
    log: list[str] = []
    _, accounts = make(recording("m", log))
    delete = accounts.soft_delete.delete(aggregate_id="a1", reason="closed")
    decision = accounts.handle(OPEN, 1, delete)
    assert decision.deleted is True
    assert log == ["m in", "m out"]


def test_without_middleware_or_with_a_passthrough_the_decision_is_the_same() -> None:
    _, plain = make()
    _, wrapped = make(passthrough, passthrough)
    meta = Metadata(principal="alice")
    expected = Decision(
        "a1",
        (Deposited(account="a1", amount=5, by="alice"),),
        Account(account="a1", balance=5),
        2,
    )
    assert plain.handle(OPEN, 1, DEPOSIT, meta) == expected
    assert wrapped.handle(OPEN, 1, DEPOSIT, meta) == expected


def test_middleware_of_one_context_does_not_apply_to_another() -> None:
    log: list[str] = []
    make(recording("m", log))
    _, other = make(log=log)
    other.handle(OPEN, 1, DEPOSIT)
    assert log == ["decide"]


def test_middleware_must_be_callable() -> None:
    bank = BoundedContext("bank", namespace="io.test.bank")
    with pytest.raises(ConfigurationError, match="middleware must be a function"):
        bank.middleware("authorise")  # type: ignore[arg-type]
    assert bank.middlewares == ()


# --- the test kit runs the middleware ---------------------------------------------------


def only_alice(cmd: Command, meta: Metadata, state: Any, next: Next) -> Decision[Any]:
    if meta.principal != "alice":
        raise Rejected("forbidden", f"{meta.principal} is not alice")
    return next(cmd, meta)


def test_the_test_kit_applies_middleware() -> None:
    _, accounts = make(only_alice)
    given(accounts, OPEN).when(DEPOSIT, Metadata(principal="mallory")).expect_rejected(
        "forbidden", "mallory is not alice"
    )
    given(accounts, OPEN).when(DEPOSIT, Metadata(principal="alice")).expect_events(
        Deposited(account="a1", amount=5, by="alice")
    ).expect_state(Account(account="a1", balance=5))
    given(accounts, Opened(account="a1")).when(DEPOSIT).expect_rejected("forbidden")
