"""Secrets at rest: sealed with the first key, opened with any (rotation), plain legacy values
read back, a value sealed under a dropped key refused."""

from __future__ import annotations

import pytest

from services.runtime.secrets import PREFIX, SecretBox, new_key


def test_seal_open_and_rotate() -> None:
    old, new = new_key(), new_key()
    sealed = SecretBox([old]).seal("whsec_123")
    assert sealed is not None and sealed.startswith(PREFIX) and "whsec_123" not in sealed
    rotated = SecretBox([new, old])  # new key first: it seals, both open
    assert rotated.open(sealed) == "whsec_123"
    resealed = rotated.seal("whsec_123")
    assert SecretBox([new]).open(resealed) == "whsec_123"
    with pytest.raises(ValueError, match="no configured key"):
        SecretBox([new]).open(sealed)  # the old key was dropped too early


def test_plain_and_empty_values() -> None:
    box = SecretBox([new_key()])
    assert box.open("legacy-plain") == "legacy-plain"  # rows from before encryption
    assert box.seal(None) is None and box.seal("") == ""
    assert SecretBox([]).seal("x") == "x" and not SecretBox([]).sealing
    with pytest.raises(ValueError):
        SecretBox([]).open(box.seal("x"))
