"""age v1 (C2SP ``age.md``) on ``cryptography``: streaming, X25519 and scrypt, ASCII armor.

>>> from transfer.age import X25519Identity, encrypt, decrypt
>>> key = X25519Identity.generate()
>>> decrypt(encrypt(b"hello", [key.recipient]), [key])
b'hello'
"""

from __future__ import annotations

from transfer.age._format import Stanza
from transfer.age.errors import (
    AgeArmorError,
    AgeError,
    AgeHeaderError,
    AgeHMACError,
    AgeKeyError,
    AgeNoMatchError,
    AgePayloadError,
)
from transfer.age.keys import (
    SCRYPT_DEFAULT_LOG_N,
    SCRYPT_MAX_LOG_N,
    Identity,
    Recipient,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    X25519Recipient,
    parse_identity,
    parse_recipient,
    read_identities_file,
    read_recipients_file,
)
from transfer.age.stream import (
    CHUNK_SIZE,
    AgeReader,
    AgeWriter,
    decrypt,
    decrypt_stream,
    encrypt,
    encrypt_stream,
)

__all__ = [
    "CHUNK_SIZE",
    "SCRYPT_DEFAULT_LOG_N",
    "SCRYPT_MAX_LOG_N",
    "AgeArmorError",
    "AgeError",
    "AgeHMACError",
    "AgeHeaderError",
    "AgeKeyError",
    "AgeNoMatchError",
    "AgePayloadError",
    "AgeReader",
    "AgeWriter",
    "Identity",
    "Recipient",
    "ScryptIdentity",
    "ScryptRecipient",
    "Stanza",
    "X25519Identity",
    "X25519Recipient",
    "decrypt",
    "decrypt_stream",
    "encrypt",
    "encrypt_stream",
    "parse_identity",
    "parse_recipient",
    "read_identities_file",
    "read_recipients_file",
]
