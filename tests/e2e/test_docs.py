"""The request/answer examples of docs/api.md, replayed against a running deployment.

Each ```` ```http ```` block that starts with a method is a request (headers, a blank line,
a body); the next block is its answer (status line, a blank line, a JSON body). One client
replays them in order, keeping its cookies and sending the CSRF token once it has one.
The names ``ada``, ``bob`` and ``zed`` are replaced by names unique to the run; ``<...>`` in
an answer matches any string.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import Client

pytestmark = pytest.mark.e2e

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"
_BLOCK = re.compile(r"```http\n(.*?)```", re.DOTALL)
_NAMES = ("ada", "bob", "zed")


def exchanges(text: str) -> list[tuple[str, str]]:
    """(request, answer) pairs of the document's http blocks."""
    blocks = _BLOCK.findall(text)
    assert blocks, "docs/api.md has no ```http examples"
    assert len(blocks) % 2 == 0, "every request block needs an answer block"
    pairs = list(zip(blocks[::2], blocks[1::2], strict=True))
    for request, answer in pairs:
        assert not request.startswith("HTTP/"), request
        assert answer.startswith("HTTP/1.1 "), answer
    return pairs


def matches(expected: Any, got: Any) -> bool:
    if isinstance(expected, str) and re.fullmatch(r"<[^<>]+>", expected):
        return isinstance(got, str) and bool(got)
    if isinstance(expected, dict):
        return (
            isinstance(got, dict)
            and expected.keys() == got.keys()
            and all(matches(v, got[k]) for k, v in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(got, list)
            and len(expected) == len(got)
            and all(matches(e, g) for e, g in zip(expected, got, strict=True))
        )
    return bool(expected == got)


def test_the_examples_in_api_md_are_what_the_service_answers(
    client: Callable[[], Client],
) -> None:
    run = uuid.uuid4().hex[:8]
    names = {name: f"{name}_{run}" for name in _NAMES}
    text = re.sub(r"\b(ada|bob|zed)\b", lambda m: names[m.group(1)], API_MD.read_text())
    http = client()
    for request, answer in exchanges(text):
        head, _, body = request.partition("\n\n")
        request_line, *header_lines = head.strip().splitlines()
        method, path = request_line.split()
        headers = dict(line.split(": ", 1) for line in header_lines)
        reply = http.request(
            method, path, body=body.rstrip("\n").encode() if body else None, headers=headers
        )
        if path == "/api/session" and method == "POST" and reply.status == 200:
            http.csrf = reply.json()["csrf_token"]
        status_line, _, expected_body = answer.partition("\n\n")
        status = int(status_line.split()[1])
        assert reply.status == status, (request_line, reply)
        if expected_body.strip():
            assert matches(json.loads(expected_body), reply.json()), (request_line, reply)
        else:
            assert reply.body == b"", (request_line, reply)
