"""``streamfold schemas check | register | diff | list`` against a real schema registry.

Each test builds its own throwaway bounded context (a unique name, so its subjects are its
own) in one of several versions of the same model, registers one version with the CLI and
checks another against it.
"""

from __future__ import annotations

import subprocess
import sys
import types
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

import pytest
from click.testing import Result
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.schema_registry_client import (
    ConfigCompatibilityLevel,
    ServerConfig,
)
from pydantic import Field
from typer.testing import CliRunner

from streamfold.cli.app import _mount, app
from streamfold.contracts.evolution import planned_schemas
from streamfold.contracts.registry import RegistryUnavailableError, SchemaRejectedError
from streamfold.domain import BoundedContext, Command, Event, State
from streamfold.errors import StreamfoldError

pytestmark = pytest.mark.integration

Price = Annotated[Decimal, Field(max_digits=12, decimal_places=2, gt=0)]

if not app.registered_groups:
    _mount()


def catalogue(name: str, version: str) -> BoundedContext:
    """A context with one aggregate whose ``ItemPriced`` event exists in several versions.

    ``a``: item_id, price (long), note; ``b``: a adds ``currency`` with a default;
    ``removed``: a without ``note``; ``retyped``: a with ``price`` a string; ``note_int``:
    ``note`` an int with a default (compatible with ``removed``, not with ``a``).
    """

    class PriceItem(Command):
        item_id: str
        price: int

    class PricedItem(State):
        item_id: str
        price: int

    if version == "a":

        class ItemPriced(Event):
            item_id: str
            price: int
            note: str

    elif version == "b":

        class ItemPriced(Event):  # type: ignore[no-redef]
            item_id: str
            price: int
            note: str
            currency: str = "EUR"

    elif version == "removed":

        class ItemPriced(Event):  # type: ignore[no-redef]
            item_id: str
            price: int

    elif version == "note_int":

        class ItemPriced(Event):  # type: ignore[no-redef]
            item_id: str
            price: int
            note: int = 0

    else:
        assert version == "retyped"

        class ItemPriced(Event):  # type: ignore[no-redef]
            item_id: str
            price: str
            note: str

    context = BoundedContext(name, namespace=f"test.{name}")
    items = context.aggregate("item", state=PricedItem, id="item_id")
    items.decides(PriceItem, creates=True)(lambda state, cmd: ItemPriced(**cmd.model_dump()))
    items.evolves(ItemPriced, creates=True)(
        lambda state, event: PricedItem(item_id=event.item_id, price=0)
    )
    return context


@pytest.fixture
def context_name() -> str:
    return f"evo_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def as_module(monkeypatch: pytest.MonkeyPatch) -> Callable[[BoundedContext], str]:
    """Expose a context as an importable ``module:attribute`` spec for ``--context``."""

    def expose(context: BoundedContext) -> str:
        module = types.ModuleType(f"evolution_fixture_{uuid.uuid4().hex[:10]}")
        module.context = context  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, module.__name__, module)
        return f"{module.__name__}:context"

    return expose


def cli(url: str, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, ["schemas", *args, "--registry", url], env=env)


def register(url: str, spec: str) -> None:
    result = cli(url, "register", "-c", spec)
    assert result.exit_code == 0, result.output


def event_subject(name: str) -> str:
    return f"{name}.item.events-test.{name}.ItemPriced"


def test_check_on_an_empty_registry_says_new_for_every_subject(
    schema_registry: Any, as_module: Callable[[BoundedContext], str], context_name: str
) -> None:
    context = catalogue(context_name, "a")
    result = cli(schema_registry.url, "check", "-c", as_module(context))
    assert result.exit_code == 0, result.output
    subjects = [p.subject for p in planned_schemas([context])]
    assert len(subjects) == 3
    for subject in subjects:
        assert f"{subject}: new\n" in result.output
    assert "3 new, 0 unchanged, 0 compatible, 0 incompatible" in result.output


def test_register_then_check_says_unchanged_and_list_shows_the_subjects(
    schema_registry: Any, as_module: Callable[[BoundedContext], str], context_name: str
) -> None:
    spec = as_module(catalogue(context_name, "a"))
    registered = cli(schema_registry.url, "register", "-c", spec)
    assert registered.exit_code == 0, registered.output
    assert f"{event_subject(context_name)}: registered version 1, id " in registered.output
    assert "3 registered, 0 unchanged" in registered.output

    checked = cli(schema_registry.url, "check", "-c", spec)
    assert checked.exit_code == 0, checked.output
    assert f"{event_subject(context_name)}: unchanged (version 1, id " in checked.output
    assert "0 new, 3 unchanged" in checked.output

    again = cli(schema_registry.url, "register", "-c", spec)
    assert again.exit_code == 0, again.output
    assert "0 registered, 3 unchanged" in again.output

    listed = cli(schema_registry.url, "list")
    assert listed.exit_code == 0, listed.output
    rows = [line.split() for line in listed.output.splitlines()]
    ours = {row[0]: row[1:] for row in rows if row[0].startswith(f"{context_name}.")}
    assert set(ours) == {p.subject for p in planned_schemas([catalogue(context_name, "a")])}
    assert all(row[0] == "1" and row[2] == "BACKWARD" for row in ours.values())
    client = schema_registry.client()
    latest = client.get_latest_version(event_subject(context_name))
    assert ours[event_subject(context_name)][1] == str(latest.schema_id)


def test_adding_a_field_with_a_default_passes_under_backward(
    schema_registry: Any, as_module: Callable[[BoundedContext], str], context_name: str
) -> None:
    client = schema_registry.client()
    assert client.get_config().compatibility_level.value == "BACKWARD"
    register(schema_registry.url, as_module(catalogue(context_name, "a")))
    evolved = as_module(catalogue(context_name, "b"))

    checked = cli(schema_registry.url, "check", "-c", evolved)
    assert checked.exit_code == 0, checked.output
    assert f"{event_subject(context_name)}: compatible with version 1 (BACKWARD)" in checked.output
    assert "0 new, 2 unchanged, 1 compatible, 0 incompatible" in checked.output

    registered = cli(schema_registry.url, "register", "-c", evolved)
    assert registered.exit_code == 0, registered.output
    assert f"{event_subject(context_name)}: registered version 2, id " in registered.output
    assert client.get_versions(event_subject(context_name)) == [1, 2]


def assert_refused(schema_registry: Any, spec: str, context: BoundedContext, expected: str) -> None:
    """Check and register both fail naming ``expected``; the registry itself answers 409."""
    subject = event_subject(context.name)
    checked = cli(schema_registry.url, "check", "-c", spec)
    assert checked.exit_code == 1, checked.output
    assert f"{subject}: {expected}" in checked.output
    assert "1 subject(s) incompatible" in checked.stderr

    registered = cli(schema_registry.url, "register", "-c", spec)
    assert registered.exit_code == 1, registered.output
    assert f"{subject}: {expected}" in registered.output
    assert "registered version" not in registered.output
    assert "nothing registered" in registered.stderr

    client = schema_registry.client()
    assert client.get_versions(subject) == [1]
    (evolved,) = (p for p in planned_schemas([context]) if p.subject == subject)
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(subject, Schema(evolved.schema, "AVRO"))
    assert refused.value.http_status_code == 409


def test_removing_a_field_without_default_fails_under_full(
    schema_registry: Any, as_module: Callable[[BoundedContext], str], context_name: str
) -> None:
    register(schema_registry.url, as_module(catalogue(context_name, "a")))
    client = schema_registry.client()
    client.set_config(
        event_subject(context_name), ServerConfig(compatibility=ConfigCompatibilityLevel.FULL)
    )
    context = catalogue(context_name, "removed")
    assert_refused(
        schema_registry,
        as_module(context),
        context,
        "field 'note' breaks READER_FIELD_MISSING_DEFAULT_VALUE against version 1: ",
    )


def test_changing_a_field_type_fails_under_backward(
    schema_registry: Any, as_module: Callable[[BoundedContext], str], context_name: str
) -> None:
    register(schema_registry.url, as_module(catalogue(context_name, "a")))
    context = catalogue(context_name, "retyped")
    assert_refused(
        schema_registry,
        as_module(context),
        context,
        "field 'price' breaks TYPE_MISMATCH against version 1: ",
    )


def test_diff_shows_the_added_field(
    schema_registry: Any, as_module: Callable[[BoundedContext], str], context_name: str
) -> None:
    register(schema_registry.url, as_module(catalogue(context_name, "a")))
    result = cli(schema_registry.url, "diff", "-c", as_module(catalogue(context_name, "b")))
    assert result.exit_code == 0, result.output
    subject = event_subject(context_name)
    assert f"{subject} (version 1):\n  + currency\n" in result.output
    assert f"--- {subject} (registered version 1)" in result.output
    assert '+      "name": "currency",' in result.output
    assert "1 of 3 subject(s) differ from the registry" in result.output


def test_basic_auth_with_the_right_credentials_works(
    schema_registry_factory: Callable[..., Any],
    as_module: Callable[[BoundedContext], str],
    context_name: str,
) -> None:
    secured = schema_registry_factory(auth=("user", "pass"))
    spec = as_module(catalogue(context_name, "a"))
    by_option = cli(secured.url, "register", "-c", spec, "--username", "user", "--password", "pass")
    assert by_option.exit_code == 0, by_option.output
    assert "3 registered" in by_option.output
    env = {"STREAMFOLD_REGISTRY_USERNAME": "user", "STREAMFOLD_REGISTRY_PASSWORD": "pass"}
    by_env = cli(secured.url, "check", "-c", spec, env=env)
    assert by_env.exit_code == 0, by_env.output
    assert "0 new, 3 unchanged" in by_env.output


def one_line_error(result: Result) -> str:
    """The line ``streamfold.cli.main`` prints for the error the command raised."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, StreamfoldError), result.exception
    line = f"error: {result.exception}"
    assert "\n" not in line
    return line


def test_basic_auth_without_or_with_wrong_credentials_is_a_one_line_error(
    schema_registry_factory: Callable[..., Any],
    as_module: Callable[[BoundedContext], str],
    context_name: str,
) -> None:
    secured = schema_registry_factory(auth=("user", "pass"))
    spec = as_module(catalogue(context_name, "a"))
    anonymous = cli(secured.url, "check", "-c", spec)
    assert isinstance(anonymous.exception, SchemaRejectedError)
    assert "401" in one_line_error(anonymous)
    assert "check the registry credentials" in one_line_error(anonymous)
    wrong = cli(secured.url, "list", "--username", "user", "--password", "nope")
    assert "401" in one_line_error(wrong)

    process = subprocess.run(
        [sys.executable, "-m", "streamfold", "schemas", "list", "--registry", secured.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert process.returncode == 1
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, process.stderr
    assert lines[0].startswith("error: schema registry: list subjects: ")
    assert "check the registry credentials" in lines[0]


def test_an_unreachable_registry_is_a_retryable_error() -> None:
    result = CliRunner().invoke(
        app, ["schemas", "list", "--registry", "http://127.0.0.1:9"], env={}
    )
    assert isinstance(result.exception, RegistryUnavailableError)
    assert one_line_error(result).startswith("error: schema registry: list subjects: ")


def test_transitive_levels_check_every_version(
    schema_registry: Any, as_module: Callable[[BoundedContext], str], context_name: str
) -> None:
    url = schema_registry.url
    client = schema_registry.client()
    register(url, as_module(catalogue(context_name, "a")))
    client.set_compatibility(event_subject(context_name), "BACKWARD_TRANSITIVE")
    register(url, as_module(catalogue(context_name, "removed")))
    result = cli(url, "check", "-c", as_module(catalogue(context_name, "note_int")))
    assert result.exit_code == 1, result.output
    assert (
        f"{event_subject(context_name)}: field 'note' breaks TYPE_MISMATCH against version 1"
        in result.output
    )
