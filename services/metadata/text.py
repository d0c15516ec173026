"""Text hygiene shared by the metadata readers, and the notes they leave about what they skip."""

from __future__ import annotations

import re
from typing import Final

# Notes beyond this are dropped (with one last note saying so): a crafted file can hold
# thousands of broken tags.
MAX_NOTES: Final = 32
# C0 controls other than tab and newline: Postgres text cannot hold NUL, and none of them
# belongs in a caption or a camera name.
_CONTROLS: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class Notes:
    """Collects "<section>: <problem>" lines, deduplicated and capped."""

    def __init__(self, limit: int = MAX_NOTES) -> None:
        self._limit = limit
        self._items: list[str] = []
        self._seen: set[str] = set()
        self._dropped = 0

    def add(self, section: str, problem: str) -> None:
        line = f"{section}: {problem}"
        if line in self._seen:
            return
        self._seen.add(line)
        if len(self._items) < self._limit:
            self._items.append(line)
        else:
            self._dropped += 1

    @property
    def items(self) -> list[str]:
        if self._dropped:
            return [*self._items, f"warnings: {self._dropped} more omitted"]
        return list(self._items)


def clean(text: str, limit: int) -> str:
    """`text` without control characters or surrounding blanks, at most `limit` characters."""
    return _CONTROLS.sub("", text).strip()[:limit]


def decode(data: bytes) -> tuple[str, bool]:
    """UTF-8 text, and whether it was valid; undecodable bytes become U+FFFD."""
    try:
        return data.decode("utf-8"), True
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace"), False
