"""Argument checks shared by the core, the adapters and the entrypoints.

Every component gives the same answer to the same bad value, so the rules live here once:

- ``bool`` is never a number. Python's ``True`` is an ``int``; a config file's ``workers =
  true`` or a caller's ``ttl=True`` is a mistake, so every predicate and check below refuses
  it.
- A number of seconds is finite: NaN and infinities are refused.
- JSON means what survives ``json.dumps``/``json.loads`` unchanged: ``None``, ``bool``,
  ``int``, finite ``float``, ``str``, and ``list`` and ``dict`` (``str`` keys) of those.
  Tuples, sets, bytes, NaN and infinities are refused rather than silently changed.

Two kinds of function:

- **predicates** (:func:`is_int`, :func:`is_number`, :func:`is_finite_number`,
  :func:`is_instance`) answer yes
  or no and narrow the type; use them where a bad value is not the caller's fault (a value
  read back from storage or off the wire that is treated as a miss);
- **checks** (:func:`check_int`, :func:`check_seconds`, :func:`check_json`) return the value
  normalised or raise. ``error`` says whose fault it is: :class:`~scalecore.errors.InvalidInput`
  (the default) for an argument of a call, whose message starts with the argument's name
  (``"limit must be an integer from 1 to 50, got 0"``); :class:`~scalecore.errors.ConfigError`
  for a constructor option or config key, which it names as its ``key``
  (``"cache.ttl: must be a number of seconds > 0, got -1"``).

Messages quote the offending value (``!r``) for numbers; :func:`check_json` quotes only
keys, types and non-finite floats, never a stored value, so session data cannot leak into
a log line.
"""

from __future__ import annotations

import math
from typing import TypeAlias, TypeGuard

from scalecore.errors import ConfigError, InvalidInput

__all__ = [
    "ErrorType",
    "check_int",
    "check_json",
    "check_optional_seconds",
    "check_seconds",
    "is_finite_number",
    "is_instance",
    "is_int",
    "is_number",
]

#: The errors a check may raise: an argument's fault, or a configuration's.
ErrorType = type[InvalidInput] | type[ConfigError]

# A path into a JSON value, innermost step last: None for the root, else (parent, step).
_Path: TypeAlias = "tuple[_Path, object] | None"


def is_instance(value: object, kind: type) -> bool:
    """``isinstance(value, kind)``, except that a ``bool`` is an instance of ``bool`` only.

    For a setting whose default is ``2``, ``true`` is refused; for one whose default is
    ``false``, ``0`` is refused.
    """
    return isinstance(value, kind) and isinstance(value, bool) == (kind is bool)


def is_int(value: object) -> TypeGuard[int]:
    """True for an ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """True for an ``int`` or ``float`` that is not a ``bool`` (NaN and infinities included)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_finite_number(value: object) -> TypeGuard[int | float]:
    """True for an ``int`` or a finite ``float``, never a ``bool``."""
    # An int is finite even past float's range, where math.isfinite would overflow.
    return is_number(value) and (isinstance(value, int) or math.isfinite(value))


def check_int(
    value: object,
    name: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    error: ErrorType = InvalidInput,
) -> int:
    """Return ``value`` if it is an ``int`` (not a ``bool``) within the inclusive bounds.

    Otherwise raise ``error`` naming ``name``: "must be an integer", followed by
    ``>= minimum``, ``<= maximum`` or ``from minimum to maximum``, and the value given.
    """
    if (
        not is_int(value)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        if minimum is not None and maximum is not None:
            wanted = f"an integer from {minimum} to {maximum}"
        elif minimum is not None:
            wanted = f"an integer >= {minimum}"
        elif maximum is not None:
            wanted = f"an integer <= {maximum}"
        else:
            wanted = "an integer"
        raise _error(error, name, f"must be {wanted}, got {value!r}")
    return value


def check_seconds(
    value: object,
    name: str,
    *,
    allow_zero: bool = False,
    maximum: float | None = None,
    error: ErrorType = InvalidInput,
) -> float:
    """Return ``value`` as a float if it is a finite number of seconds > 0.

    ``allow_zero`` accepts 0 as well (a delay, a wait); ``maximum`` is an inclusive upper
    bound. Otherwise raise ``error`` naming ``name``: "must be a number of seconds > 0"
    (``>= 0`` with ``allow_zero``; ``and <= maximum`` with a bound), and the value given.
    """
    if not _seconds_ok(value, allow_zero, maximum):
        raise _error(error, name, f"must be {_seconds_wanted(allow_zero, maximum)}, got {value!r}")
    return float(value)


def check_optional_seconds(
    value: object,
    name: str,
    *,
    allow_zero: bool = False,
    maximum: float | None = None,
    error: ErrorType = InvalidInput,
) -> float | None:
    """:func:`check_seconds`, with ``None`` (no limit, no expiry) returned unchanged."""
    if value is None:
        return None
    if not _seconds_ok(value, allow_zero, maximum):
        wanted = _seconds_wanted(allow_zero, maximum)
        raise _error(error, name, f"must be None or {wanted}, got {value!r}")
    return float(value)


def check_json(value: object, what: str, *, max_depth: int | None = None) -> None:
    """Raise ``InvalidInput`` unless ``value`` is JSON that round-trips unchanged.

    ``what`` names the value in the message (``"payload"``, ``"session data"``), followed by
    the path to the offending part (``payload['tags'][2] is a set, which is not JSON``).
    ``max_depth`` bounds how deeply lists and objects may nest; unbounded, a value nested
    deeper than the ``json`` module can encode passes here and fails when it is encoded, so
    an encoder must still catch ``RecursionError``. The walk itself is iterative: no value
    overflows the stack here.
    """
    # Each entry carries its path as a linked list (parent, step), so a push costs O(1) and
    # the path is spelled out only for the message.
    stack: list[tuple[object, int, _Path]] = [(value, 0, None)]
    while stack:
        item, depth, path = stack.pop()
        if item is None or isinstance(item, bool | int | str):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidInput(f"{_where(what, path)} is {item!r}; JSON has no NaN or infinity")
            continue
        if isinstance(item, list | dict) and max_depth is not None and depth >= max_depth:
            raise InvalidInput(f"{what} is nested more than {max_depth} levels deep")
        if isinstance(item, list):
            stack.extend((nested, depth + 1, (path, index)) for index, nested in enumerate(item))
        elif isinstance(item, dict):
            for key, nested in item.items():
                if not isinstance(key, str):
                    raise InvalidInput(
                        f"{_where(what, path)} has a {type(key).__name__} key; "
                        "JSON object keys are strings"
                    )
                stack.append((nested, depth + 1, (path, key)))
        else:
            kind = type(item).__name__
            raise InvalidInput(f"{_where(what, path)} is a {kind}, which is not JSON")


def _seconds_ok(value: object, allow_zero: bool, maximum: float | None) -> TypeGuard[int | float]:
    if not is_finite_number(value):
        return False
    if value < 0 or (value == 0 and not allow_zero):
        return False
    return maximum is None or value <= maximum


def _seconds_wanted(allow_zero: bool, maximum: float | None) -> str:
    wanted = "a number of seconds >= 0" if allow_zero else "a number of seconds > 0"
    return wanted if maximum is None else f"{wanted} and <= {maximum:g}"


def _error(error: ErrorType, name: str, problem: str) -> InvalidInput | ConfigError:
    if issubclass(error, ConfigError):
        return error(problem, key=name)
    return error(f"{name} {problem}")


def _where(what: str, path: _Path) -> str:
    steps: list[str] = []
    while path is not None:
        path, step = path
        steps.append(f"[{step!r}]")
    return what + "".join(reversed(steps))
