"""Secrets at rest: values a service stores in Postgres (a webhook's signing secret) are
encrypted with Fernet (`cryptography`: AES-128-CBC + HMAC-SHA256, authenticated) under the keys
in PIXMESH_SECRETS_KEYS.

Rotation: put a new key first in the list and keep the old ones after it. The first key
encrypts; every key decrypts (MultiFernet). Once nothing stored under an old key is still
needed (a webhook secret lives as long as its job's deliveries), drop the old key.

Stored values carry a prefix, so rows written before encryption (plain text) still read back.
Without keys nothing is encrypted (a warning at start).
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

PREFIX = "fernet:"


class SecretBox:
    def __init__(self, keys: Sequence[str]) -> None:
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys]) if keys else None

    @property
    def sealing(self) -> bool:
        return self._fernet is not None

    def seal(self, value: str | None) -> str | None:
        if not value or self._fernet is None:
            return value
        return PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, stored: str | None) -> str | None:
        """The value; a plain (pre-encryption) one as it is. Raises ValueError if it was sealed
        under a key no longer configured."""
        if not stored or not stored.startswith(PREFIX):
            return stored
        if self._fernet is None:
            raise ValueError("a sealed secret, but PIXMESH_SECRETS_KEYS is not set")
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise ValueError("a sealed secret no configured key opens") from None


def new_key() -> str:
    """A new key for PIXMESH_SECRETS_KEYS: python -m services.runtime.secrets"""
    return Fernet.generate_key().decode()


if __name__ == "__main__":
    print(new_key())
