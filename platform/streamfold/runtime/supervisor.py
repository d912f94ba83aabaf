"""Several runners in one worker process: the aggregate worker and each event handler's.

A runner has ``run()``, ``stop()`` and ``ready``. :class:`Supervisor` runs the first in the
calling thread and the others in threads of their own; when any of them ends (a stop, or
an error) it stops the rest, waits for them, and raises the first error, so a failing
handler takes its process down instead of dying unseen.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from streamfold.observability.logging import get_logger
from streamfold.runtime.checkpoint import FencedError

__all__ = ["Loop", "RejoiningLoop", "Runner", "Supervisor"]

log = get_logger(__name__)


class Runner(Protocol):
    def run(self) -> None: ...

    def stop(self) -> None: ...

    @property
    def ready(self) -> bool: ...


class Loop:
    """A runner's loop: :meth:`run` starts, steps until :meth:`stop` (or ``until()``), then
    closes, committing only on a clean stop (leaving through an exception aborts)."""

    _running = False
    _started = False

    def start(self) -> None:
        raise NotImplementedError

    def step(self) -> None:
        raise NotImplementedError

    def close(self, *, commit: bool = True) -> None:
        raise NotImplementedError

    def run(self, until: Callable[[], bool] | None = None) -> None:
        if not self._started:
            self.start()
        self._running = True
        clean = False
        try:
            while self._running and not (until is not None and until()):
                self.step()
            clean = True
        finally:
            self.close(commit=clean)

    def stop(self) -> None:
        """Ask :meth:`run` to finish after the current step (safe from a signal handler)."""
        self._running = False


class RejoiningLoop(Loop):
    """A loop whose producer may be fenced: :meth:`run` closes it (Loop's way, aborting
    nothing the fence has not aborted), asks :meth:`_recover_from` to make it ready to start
    again (or to raise), and runs it again, until it is stopped.

    A fence that ends a loop already asked to stop ends the stop: the open batch is not
    committed (the fence aborted it, or the broker will; a successor processes it again),
    and :meth:`run` returns. A SIGTERM that meets a lost broker is a stop, not a crash: the
    process exits 0, as after any stop, and nothing is lost.
    """

    _stop_asked = False

    def run(self, until: Callable[[], bool] | None = None) -> None:
        def done() -> bool:
            return self._stop_asked or (until is not None and until())

        while True:
            try:
                super().run(done)
                return
            except FencedError as exc:
                if self._stop_asked:
                    log.warning(
                        "stopped while fenced: the open batch was not committed",
                        error=str(exc),
                    )
                    return
                self._recover_from(exc)

    def stop(self) -> None:
        self._stop_asked = True
        super().stop()

    def _recover_from(self, fence: FencedError) -> None:
        """After a fence (the loop is closed): make ready to start again, or raise."""
        raise fence


class Supervisor:
    """Runs ``runners`` together until one ends; see the module docstring."""

    def __init__(self, runners: Sequence[Runner]) -> None:
        if not runners:
            raise ValueError("nothing to run")
        self.runners = list(runners)
        self._errors: list[BaseException] = []
        self._ended = threading.Event()

    @property
    def ready(self) -> bool:
        return all(r.ready for r in self.runners)

    def stop(self) -> None:
        """Ask every runner to stop (safe from a signal handler)."""
        for runner in self.runners:
            runner.stop()

    def run(self) -> None:
        threads = [
            threading.Thread(target=self._guarded, args=(r,), name=f"runner-{i}", daemon=True)
            for i, r in enumerate(self.runners[1:], start=1)
        ]
        for thread in threads:
            thread.start()
        try:
            self._guarded(self.runners[0])
        finally:
            self.stop()
            for thread in threads:
                thread.join()
        if self._errors:
            raise self._errors[0]

    def _guarded(self, runner: Runner) -> None:
        try:
            runner.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised by run() once all stopped
            log.error(
                "a runner failed; stopping the others",
                runner=type(runner).__name__,
                error=str(exc)[:500],
            )
            self._errors.append(exc)
        finally:
            self.stop()
