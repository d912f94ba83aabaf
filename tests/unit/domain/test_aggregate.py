"""Aggregate declaration (validated at registration) and execution (Aggregate.handle)."""

from __future__ import annotations

from typing import Any

import pytest

from streamfold.domain import BoundedContext, Command, Event, Metadata, Rejected, State
from streamfold.domain.aggregate import Snapshot
from streamfold.errors import ConfigurationError, HandlerContractError

pytestmark = pytest.mark.unit


class Open(Command):
    account: str


class Deposit(Command):
    account: str
    amount: int


class Opened(Event):
    account: str


class Deposited(Event):
    account: str
    amount: int


class Account(State):
    account: str
    balance: int = 0


def make() -> tuple[BoundedContext, Any]:
    """A fresh context with a small account aggregate (decide/evolve registered)."""
    bank = BoundedContext("bank", namespace="io.test.bank")
    accounts = bank.aggregate("account", state=Account, id="account", soft_delete=True)

    @accounts.decides(Open, creates=True)
    def open_account(state: Account | None, cmd: Open) -> Opened:
        return Opened(account=cmd.account)

    @accounts.decides(Deposit)
    def deposit(state: Account, cmd: Deposit, meta: Metadata) -> list[Deposited]:
        if cmd.amount <= 0:
            raise Rejected("invalid_amount", f"{meta.principal} sent {cmd.amount}")
        return [Deposited(account=cmd.account, amount=cmd.amount)] * 2

    @accounts.evolves(Opened)  # its state admits None: Opened may be the first event
    def opened(state: Account | None, event: Opened) -> Account:
        return Account(account=event.account)

    @accounts.evolves(Deposited)
    def deposited(state: Account, event: Deposited) -> Account:
        return state.model_copy(update={"balance": state.balance + event.amount})

    return bank, accounts


OPEN = Account(account="a1")


# --- execution ------------------------------------------------------------------------


def test_handle_decides_then_folds_one_version_per_event() -> None:
    _, accounts = make()
    decision = accounts.handle(OPEN, 1, Deposit(account="a1", amount=5))
    assert decision.aggregate_id == "a1"
    assert decision.events == (Deposited(account="a1", amount=5),) * 2
    assert decision.state == Account(account="a1", balance=10)
    assert decision.version == 3
    assert list(decision.event_versions) == [2, 3]


def test_metadata_reaches_a_decide_that_asks_for_it() -> None:
    _, accounts = make()
    with pytest.raises(Rejected) as rejected:
        accounts.handle(OPEN, 1, Deposit(account="a1", amount=0), Metadata(principal="bob"))
    assert (rejected.value.code, rejected.value.message) == ("invalid_amount", "bob sent 0")


def test_non_creating_command_on_no_state_is_not_found() -> None:
    _, accounts = make()
    with pytest.raises(Rejected, match="not_found: account 'a1' does not exist"):
        accounts.handle(None, 0, Deposit(account="a1", amount=1))


@pytest.mark.parametrize(("expected", "ok"), [(1, True), (0, False), (2, False)])
def test_expected_version(expected: int, ok: bool) -> None:
    _, accounts = make()
    meta = Metadata(expected_version=expected)
    if ok:
        assert accounts.handle(OPEN, 1, Deposit(account="a1", amount=1), meta).version == 3
    else:
        with pytest.raises(Rejected) as rejected:
            accounts.handle(OPEN, 1, Deposit(account="a1", amount=1), meta)
        assert rejected.value.code == "version_conflict"
        assert "is at version 1" in rejected.value.message


def test_expected_version_zero_means_must_not_exist() -> None:
    _, accounts = make()
    decision = accounts.handle(None, 0, Open(account="a1"), Metadata(expected_version=0))
    assert decision.version == 1


def test_fold_replays_events_from_nothing() -> None:
    _, accounts = make()
    snap = accounts.fold([Opened(account="a1"), Deposited(account="a1", amount=3)])
    assert snap == Snapshot(Account(account="a1", balance=3), 2, False)


def test_event_that_cannot_come_first_is_a_contract_error() -> None:
    _, accounts = make()
    with pytest.raises(HandlerContractError, match="cannot be the first event"):
        accounts.fold([Deposited(account="a1", amount=3)])


def test_the_contract_error_says_how_to_let_an_event_come_first() -> None:
    _, accounts = make()
    with pytest.raises(
        HandlerContractError, match=r"annotate the state of .*deposited as Account \| None"
    ):
        accounts.fold([Deposited(account="a1", amount=3)])


@pytest.mark.parametrize(
    ("annotation", "creates", "first"),
    [
        ("Account | None", None, True),
        ("Optional[Account]", None, True),
        ("Any", None, True),
        ("Account", None, False),
        (None, None, False),  # unannotated: strict unless declared
        (None, True, True),
        ("Account", True, True),  # the flag wins over the annotation
        ("Account | None", False, False),
    ],
)
def test_whether_an_event_may_come_first_is_read_from_its_evolve_s_signature(
    annotation: str | None, creates: bool | None, first: bool
) -> None:
    bank = BoundedContext("bank3", namespace="io.test.bank3")
    accounts = bank.aggregate("account", state=Account, id="account")

    def opened(state, event):  # type: ignore[no-untyped-def]
        return Account(account=event.account)

    if annotation is not None:
        opened.__annotations__ = {"state": annotation, "event": "Opened", "return": "Account"}
    accounts.evolves(Opened, **({} if creates is None else {"creates": creates}))(opened)
    if first:
        assert accounts.fold([Opened(account="a1")]).state == Account(account="a1")
    else:
        with pytest.raises(HandlerContractError, match="cannot be the first event"):
            accounts.fold([Opened(account="a1")])


def test_a_resolved_annotation_is_read_too() -> None:
    bank = BoundedContext("bank4", namespace="io.test.bank4")
    accounts = bank.aggregate("account", state=Account, id="account")

    def opened(state: Account | None, event: Opened) -> Account:
        return Account(account=event.account)

    opened.__annotations__ = {"state": Account | None, "event": Opened, "return": Account}
    accounts.evolves(Opened)(opened)
    assert accounts.fold([Opened(account="a1")]).version == 1


def test_unknown_command_and_event_are_contract_errors() -> None:
    class Close(Command):
        target: str  # not even the aggregate's id field

    class Closed(Event):
        account: str

    _, accounts = make()
    with pytest.raises(HandlerContractError, match="no decide for Close"):
        accounts.handle(OPEN, 1, Close(target="a1"))
    with pytest.raises(HandlerContractError, match="no evolve for Closed"):
        accounts.evolve(OPEN, Closed(account="a1"))


def test_decide_must_return_events_and_evolve_a_state() -> None:
    bank = BoundedContext("bank", namespace="io.test.bank")
    accounts = bank.aggregate("account", state=Account, id="account")

    @accounts.decides(Open, creates=True)
    def bad_decide(state: Account | None, cmd: Open) -> Any:
        return "not an event"

    with pytest.raises(HandlerContractError, match="must return an Event"):
        accounts.handle(None, 0, Open(account="a1"))

    @accounts.evolves(Opened, creates=True)
    def bad_evolve(state: Account | None, event: Opened) -> Any:
        return None

    with pytest.raises(HandlerContractError, match="returned NoneType, expected Account"):
        accounts.fold([Opened(account="a1")])


def test_id_function_must_return_a_non_empty_string() -> None:
    bank = BoundedContext("bank", namespace="io.test.bank")
    accounts = bank.aggregate("account", state=Account, id=lambda c: "")
    with pytest.raises(HandlerContractError, match="non-empty str"):
        accounts.aggregate_id(Open(account="a1"))


# --- soft delete ----------------------------------------------------------------------


def test_soft_delete_messages_are_named_after_the_state() -> None:
    _, accounts = make()
    soft = accounts.deletion
    names = [soft.delete, soft.deleted, soft.recover, soft.recovered]
    assert [m.__name__ for m in names] == [
        "DeleteAccount",
        "AccountDeleted",
        "RecoverAccount",
        "AccountRecovered",
    ]
    assert accounts.commands == (Open, Deposit, soft.delete, soft.recover)
    assert accounts.events == (Opened, Deposited, soft.deleted, soft.recovered)


def test_soft_delete_lifecycle() -> None:
    _, accounts = make()
    soft = accounts.deletion
    deleted = accounts.handle(OPEN, 1, soft.delete(aggregate_id="a1", reason="fraud"))
    assert deleted.events == (soft.deleted(aggregate_id="a1", reason="fraud"),)
    assert (deleted.state, deleted.version, deleted.deleted) == (OPEN, 2, True)

    for command, code in [
        (Deposit(account="a1", amount=1), "aggregate_deleted"),
        (soft.delete(aggregate_id="a1"), "aggregate_deleted"),
    ]:
        with pytest.raises(Rejected) as rejected:
            accounts.handle(OPEN, 2, command, deleted=True)
        assert rejected.value.code == code

    recovered = accounts.handle(OPEN, 2, soft.recover(aggregate_id="a1"), deleted=True)
    assert (recovered.version, recovered.deleted) == (3, False)


def test_the_soft_delete_messages_of_an_aggregate_without_soft_delete_are_a_clear_error() -> None:
    bank = BoundedContext("bank2", namespace="io.streamfold.test.bank2")
    plain = bank.aggregate("account", state=Account, id="account")
    with pytest.raises(ConfigurationError, match="has no soft delete"):
        _ = plain.deletion


@pytest.mark.parametrize(
    ("state", "command", "code"),
    [
        (None, "delete", "not_found"),
        (None, "recover", "not_found"),
        (OPEN, "recover", "not_deleted"),
    ],
)
def test_soft_delete_rejections(state: Account | None, command: str, code: str) -> None:
    _, accounts = make()
    message = getattr(accounts.deletion, command)(aggregate_id="a1")
    with pytest.raises(Rejected) as rejected:
        accounts.handle(state, 0 if state is None else 1, message)
    assert rejected.value.code == code


# --- declaration ----------------------------------------------------------------------


def test_decorators_return_the_function_unchanged() -> None:
    bank = BoundedContext("bank", namespace="io.test.bank")
    accounts = bank.aggregate("account", state=Account, id="account")

    def open_account(state: Account | None, cmd: Open) -> Opened:
        return Opened(account=cmd.account)

    assert accounts.decides(Open, creates=True)(open_account) is open_account
    assert open_account(None, Open(account="x")) == Opened(account="x")
    assert accounts.creates(Open) and not accounts.creates(Deposit)


def _decide_2(state: Account | None, cmd: Deposit) -> Deposited:
    raise NotImplementedError


def _decide_1(state: Account | None) -> Deposited:
    raise NotImplementedError


def _decide_wrong(state: Account | None, cmd: Open) -> Deposited:
    raise NotImplementedError


@pytest.mark.parametrize(
    ("declare", "match"),
    [
        (lambda a: a.decides(Opened), "takes a Command type"),
        (lambda a: a.decides(a.soft_delete.delete), "built in"),
        (lambda a: a.decides(Deposit)(_decide_2), "already has a decide"),
        (lambda a: a.decides(Open)(_decide_1), "must take 2 or 3 positional"),
        (lambda a: a.evolves(Open), "takes an Event type"),
        (lambda a: a.evolves(Deposited)(lambda s, e: s), "already has an evolve"),
        (lambda a: a.evolves(Deposited)(lambda s, e, m: s), "must take 2 positional"),
    ],
)
def test_invalid_declarations_fail_at_registration(declare: Any, match: str) -> None:
    _, accounts = make()
    with pytest.raises(ConfigurationError, match=match):
        declare(accounts)


def test_annotation_that_cannot_accept_the_command_is_refused() -> None:
    bank = BoundedContext("bank", namespace="io.test.bank")
    accounts = bank.aggregate("account", state=Account, id="account")
    with pytest.raises(ConfigurationError, match="annotated Open"):
        accounts.decides(Deposit)(_decide_wrong)


def test_id_field_must_exist_on_the_command() -> None:
    class Ping(Command):
        target: str

    bank = BoundedContext("bank", namespace="io.test.bank")
    accounts = bank.aggregate("account", state=Account, id="account")
    with pytest.raises(ConfigurationError, match="no id field 'account'"):
        accounts.decides(Ping)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"state": Opened, "id": "account"}, "State subclass"),
        ({"state": Account, "id": 3}, "field name or a function"),
    ],
)
def test_invalid_aggregate_arguments(kwargs: dict[str, Any], match: str) -> None:
    bank = BoundedContext("bank", namespace="io.test.bank")
    with pytest.raises(ConfigurationError, match=match):
        bank.aggregate("account", **kwargs)
