"""How often, and after how long, a bus redelivers a message whose handler failed.

:class:`RetryPolicy` is a pure, immutable value shared by every bus adapter, so the same
``max_attempts`` and ``retry_delays`` options mean the same thing on each of them: delivery
``n`` that fails is followed by delivery ``n + 1`` after ``delay_for(n)`` seconds, until
``exhausted(n)`` says delivery ``n`` was the last one allowed and the message is
dead-lettered instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs

from scalecore.errors import ConfigError, InvalidInput
from scalecore.validate import check_int, is_int, is_number

__all__ = ["MAX_RETRY_DELAY", "RetryPolicy"]

#: The longest single retry delay accepted, in seconds (one day). A larger value is far
#: more likely a unit mistake (milliseconds written as seconds) than an intention.
MAX_RETRY_DELAY = 86_400.0


@attrs.frozen
class RetryPolicy:
    """``max_attempts`` deliveries at most, separated by ``delays`` (seconds).

    ``delays[i]`` is the wait after failed delivery ``i + 1``; the last delay repeats for
    every later retry. ``max_attempts`` counts every delivery, the first included, so
    ``max_attempts=1`` means "never retry". Construction raises ``InvalidInput`` unless
    ``max_attempts`` is an ``int`` >= 1 and ``delays`` a non-empty ``tuple`` of finite
    numbers between 0 and :data:`MAX_RETRY_DELAY`.
    """

    max_attempts: int
    delays: tuple[float, ...]

    def __attrs_post_init__(self) -> None:
        problem = _max_attempts_problem(self.max_attempts)
        if problem:
            raise InvalidInput(f"max_attempts {problem}")
        if not isinstance(self.delays, tuple):
            raise InvalidInput(f"delays must be a tuple, not {type(self.delays).__name__}")
        problem = _delays_problem(self.delays)
        if problem:
            raise InvalidInput(f"delays {problem}")

    @classmethod
    def from_options(cls, *, max_attempts: object, retry_delays: object) -> RetryPolicy:
        """Build a policy from adapter options as config gives them (a list is fine).

        Raises ``ConfigError`` whose key is the option at fault (``"max_attempts"`` or
        ``"retry_delays"``), so every bus adapter reports bad values the same way.
        """
        problem = _max_attempts_problem(max_attempts)
        if problem:
            raise ConfigError(problem, key="max_attempts")
        if isinstance(retry_delays, str | bytes) or not isinstance(retry_delays, Sequence):
            raise ConfigError(
                f"must be a list of seconds, not {type(retry_delays).__name__}",
                key="retry_delays",
            )
        delays = tuple(retry_delays)
        problem = _delays_problem(delays)
        if problem:
            raise ConfigError(problem, key="retry_delays")
        assert isinstance(max_attempts, int)  # checked above; narrows the type
        return cls(max_attempts, tuple(float(delay) for delay in delays))

    def delay_for(self, attempt: int) -> float:
        """Seconds to wait before redelivering after delivery ``attempt`` (1-based) failed.

        Raises ``InvalidInput`` if ``attempt`` is not an int >= 1.
        """
        _check_attempt(attempt)
        return float(self.delays[min(attempt, len(self.delays)) - 1])

    def exhausted(self, attempt: int) -> bool:
        """Whether delivery ``attempt`` was the last allowed: if it fails, dead-letter.

        Raises ``InvalidInput`` if ``attempt`` is not an int >= 1.
        """
        _check_attempt(attempt)
        return attempt >= self.max_attempts


def _max_attempts_problem(value: object) -> str | None:
    if not is_int(value):
        return f"must be an integer, not {type(value).__name__}"
    if value < 1:
        return f"must be at least 1, got {value}"
    return None


def _delays_problem(delays: tuple[object, ...]) -> str | None:
    if not delays:
        return "must hold at least one delay"
    for index, delay in enumerate(delays):
        if not is_number(delay):
            return f"[{index}] must be a number of seconds, not {type(delay).__name__}"
        if not math.isfinite(delay) or not 0 <= delay <= MAX_RETRY_DELAY:
            return f"[{index}] must be between 0 and {MAX_RETRY_DELAY:g} seconds, got {delay!r}"
    return None


def _check_attempt(attempt: object) -> None:
    check_int(attempt, "attempt", minimum=1)
