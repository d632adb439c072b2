"""Card-key secrets at rest: AES-256-GCM with a random nonce, bound to their product by the AAD.

Duplicate detection needs equality without plaintext, so each secret also gets a keyed
fingerprint (HMAC-SHA256 under a subkey derived with HKDF). Neither the plaintext nor the
fingerprint key is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12


class SecretBox:
    def __init__(self, key: bytes):
        if len(key) != 32:
            raise ValueError("encryption key must be 32 bytes")
        self._aead = AESGCM(key)
        self._fp_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"zaima-fingerprint").derive(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:8]

    def encrypt(self, plaintext: str, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext.encode("utf-8"), context.encode())

    def decrypt(self, blob: bytes, context: str) -> str:
        nonce, body = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
        return self._aead.decrypt(nonce, body, context.encode()).decode("utf-8")

    def fingerprint(self, plaintext: str) -> str:
        return hmac.new(self._fp_key, plaintext.encode("utf-8"), hashlib.sha256).hexdigest()
