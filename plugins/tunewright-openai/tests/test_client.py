"""Retry-After parsing of the openai-compatible client (no server needed)."""

from __future__ import annotations

import email.utils
import time

from tunewright_openai.client import _retry_after_s


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    assert _retry_after_s("3", 9.0) == 3.0
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8.0 < _retry_after_s(in_ten, 99.0) <= 10.0
    assert _retry_after_s(email.utils.formatdate(time.time() - 60, usegmt=True), 5.0) == 0.0
    assert _retry_after_s("soon", 5.0) == 5.0
