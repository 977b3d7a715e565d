"""Encryption at rest for OMERO session keys: they are only ever decrypted server-side.

The key is PORTAL_ENCRYPTION_KEY, kept apart from the secret key that signs CSRF tokens, so the two
can be rotated (and leak) independently.
"""
from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken


def _fernet(encryption_key: str) -> Fernet:
    # Any string makes a Fernet key: operators paste a random string, not a base64 32-byte key.
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"omero-session-key:" + encryption_key.encode()).digest()))


def encrypt(plaintext: str, encryption_key: str) -> str:
    return _fernet(encryption_key).encrypt(plaintext.encode()).decode()


def decrypt(token: str, encryption_key: str) -> str | None:
    """The plaintext, or None when the key changed since it was stored (the user signs in again)."""
    try:
        return _fernet(encryption_key).decrypt(token.encode()).decode()
    except InvalidToken:
        return None
