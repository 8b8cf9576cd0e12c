"""JobLedger adapters, and the argument rules every one of them applies.

Job names and owners are non-empty strings of at most 200 characters (the SQL column size);
slots are integers (a slot's start in epoch seconds); TTLs are positive, finite seconds.
Anything else is refused with ``InvalidInput`` before the ledger is touched.
"""

from __future__ import annotations

import math

from scalecore.errors import InvalidInput
from scalecore.ports.ledger import Claim
from scalecore.validate import is_int, is_number

__all__ = ["MAX_NAME_LENGTH", "check_before", "check_claim", "check_claim_args"]

#: Longest job name or owner; matches ``scalecore.cron.MAX_JOB_NAME``.
MAX_NAME_LENGTH = 200


def check_claim_args(job: object, slot: object, owner: object) -> None:
    """Raise ``InvalidInput`` unless job, slot and owner could name a claim."""
    for what, value in (("job", job), ("owner", owner)):
        if not isinstance(value, str) or not value:
            raise InvalidInput(f"{what} must be a non-empty string, not {value!r}")
        if len(value) > MAX_NAME_LENGTH:
            raise InvalidInput(f"{what} must be at most {MAX_NAME_LENGTH} characters")
    if not is_int(slot):
        raise InvalidInput(f"slot must be an integer (epoch seconds), not {slot!r}")
    if not -(2**63) <= slot < 2**63:
        raise InvalidInput("slot is out of range for a 64-bit integer")


def check_claim(claim: object) -> Claim:
    """Return ``claim`` if it is a :class:`Claim` with valid fields, else raise ``InvalidInput``."""
    if not isinstance(claim, Claim):
        raise InvalidInput(f"expected a Claim, not {type(claim).__name__}")
    check_claim_args(claim.job, claim.slot, claim.owner)
    return claim


def check_before(before: object) -> float:
    """Return ``before`` (epoch seconds) as a float, or raise ``InvalidInput``."""
    if not is_number(before) or math.isnan(before):
        raise InvalidInput(f"before must be epoch seconds, not {before!r}")
    return float(before)
