"""The checked-in contracts: ``schemas/<context>/<Name>.avsc``, one file per record type.

Each bounded context yields the schemas of its commands, events and states, rendered with
:func:`~streamfold.contracts.avro.canonical_json` so that regenerating unchanged models
changes no byte, and a model change shows as a reviewable diff. :func:`stale_schema_files`
is what ``streamfold schemas generate --check`` and the freshness unit test run.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from pathlib import Path

from streamfold.contracts.avro import avro_schema, canonical_json
from streamfold.domain.context import BoundedContext
from streamfold.errors import ConfigurationError

__all__ = [
    "DEFAULT_TOPOLOGY_PACKAGE",
    "discover_contexts",
    "load_contexts",
    "render_schema_files",
    "stale_schema_files",
    "write_schema_files",
]

DEFAULT_TOPOLOGY_PACKAGE = "topologies"


def render_schema_files(contexts: Iterable[BoundedContext]) -> dict[str, str]:
    """Map each relative path ``<context>/<Name>.avsc`` to its canonical text, sorted."""
    files: dict[str, str] = {}
    seen: set[str] = set()
    for context in contexts:
        if context.name in seen:
            raise ConfigurationError(f"two bounded contexts named {context.name!r}")
        seen.add(context.name)
        for model in (*context.commands(), *context.events(), *context.states()):
            path = f"{context.name}/{model.__name__}.avsc"
            files[path] = canonical_json(avro_schema(model, context.namespace))
    return dict(sorted(files.items()))


def stale_schema_files(contexts: Iterable[BoundedContext], root: Path) -> list[str]:
    """Describe every difference between the generated schemas and ``root``; [] if fresh."""
    contexts = list(contexts)
    expected = render_schema_files(contexts)
    problems = []
    for path, text in expected.items():
        target = root / path
        if not target.exists():
            problems.append(f"missing {path}")
        elif target.read_text(encoding="utf-8") != text:
            problems.append(f"changed {path}")
    for context in contexts:
        for existing in sorted((root / context.name).glob("*.avsc")):
            relative = f"{context.name}/{existing.name}"
            if relative not in expected:
                problems.append(f"extra {relative}")
    return problems


def write_schema_files(contexts: Iterable[BoundedContext], root: Path) -> list[str]:
    """Bring ``root`` up to date (write changed, delete extra); return what changed."""
    contexts = list(contexts)
    changes = stale_schema_files(contexts, root)
    for path, text in render_schema_files(contexts).items():
        target = root / path
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
    for change in changes:
        kind, _, path = change.partition(" ")
        if kind == "extra":
            (root / path).unlink()
    return changes


def load_contexts(specs: Iterable[str]) -> list[BoundedContext]:
    """Import contexts from ``module:attribute`` specs; a bare ``module`` gives all of its."""
    contexts: list[BoundedContext] = []
    for spec in specs:
        module_name, _, attribute = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigurationError(
                f"cannot import {module_name!r} (from {spec!r}): {exc}"
            ) from exc
        if attribute:
            found = getattr(module, attribute, None)
            if not isinstance(found, BoundedContext):
                raise ConfigurationError(f"{spec!r} is not a BoundedContext")
            contexts.append(found)
        else:
            contexts.extend(v for v in vars(module).values() if isinstance(v, BoundedContext))
    return list({id(c): c for c in contexts}.values())


def discover_contexts(package: str = DEFAULT_TOPOLOGY_PACKAGE) -> list[BoundedContext]:
    """Every context exported by a sub-package of ``package`` (``topologies.retail``, ...)."""
    try:
        root = importlib.import_module(package)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import topology package {package!r}: {exc}") from exc
    names = sorted(
        f"{package}.{info.name}" for info in pkgutil.iter_modules(root.__path__) if info.ispkg
    )
    return sorted(load_contexts(names), key=lambda c: c.name)
