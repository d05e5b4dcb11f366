"""Solana addresses: base58 text of a 32-byte public key."""

from __future__ import annotations

import re

import base58

# The base58 alphabet only: base58.b58decode would quietly strip surrounding white space.
_BASE58 = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,44}")


def is_public_key(value: object) -> bool:
    """True for the base58 text of exactly 32 bytes (a wallet or a mint address)."""
    if not isinstance(value, str) or _BASE58.fullmatch(value) is None:
        return False
    return len(base58.b58decode(value)) == 32
