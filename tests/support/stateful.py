"""How the project's hypothesis state machines run: CI's bounded run, or a long one with
``MSD_LONG_TESTS=1``."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import RuleBasedStateMachine

__all__ = ["LONG", "PortalMachine", "machine_settings"]

LONG = os.environ.get("MSD_LONG_TESTS") == "1"


def machine_settings(
    *,
    examples: int,
    long_examples: int,
    steps: int,
    long_steps: int | None = None,
    shrink_long: bool = True,
) -> settings:
    """CI's bounded run: ``examples`` derandomized examples of ``steps`` steps (so a failure
    replays), its failing steps printed as found. The machines drive real sockets, files
    and timeouts: shrinking would replay them for minutes, past CI's timeout, losing the
    steps. With ``MSD_LONG_TESTS=1``: ``long_examples`` random examples of ``long_steps``
    steps, shrunk unless ``shrink_long`` is false (where timing decides whether a
    sequence fails, shrinking chases it without end). No "explain" phase: its tracer slows
    every step several times over."""
    shrink = [Phase.shrink] if LONG and shrink_long else []
    return settings(
        max_examples=long_examples if LONG else examples,
        stateful_step_count=(long_steps or steps) if LONG else steps,
        derandomize=not LONG,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.reuse, Phase.generate, *shrink],
        report_multiple_bugs=False,
    )


class PortalMachine(RuleBasedStateMachine):
    """A state machine whose system under test runs on an event loop in another thread (an
    anyio blocking portal): hypothesis calls the rules synchronously, and they drive the
    async parts with ``self.portal.call``. A subclass's teardown ends with
    :meth:`close_portal`."""

    #: Options of the portal's event loop: ``{"use_uvloop": True}`` for uvloop.
    backend_options: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        super().__init__()
        self._portal_cm = start_blocking_portal("asyncio", self.backend_options)
        self.portal: BlockingPortal = self._portal_cm.__enter__()

    def close_portal(self, shutdown: Callable[[], Awaitable[object]] | None = None) -> None:
        """Run ``shutdown`` on the portal's loop, if given, then stop the loop whatever it
        raised."""
        try:
            if shutdown is not None:
                self.portal.call(shutdown)
        finally:
            self._portal_cm.__exit__(None, None, None)
