"""Bech32 (BIP 173) encoding, as used by age for recipients and identities.

Pure functions; no length limit (age strings exceed BIP 173's 90 characters).
"""

from __future__ import annotations

from transfer.errors import InputError

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


class Bech32Error(InputError):
    """A key string is not valid Bech32."""


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= _GEN[i] if ((top >> i) & 1) else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(x) >> 5 for x in hrp] + [0] + [ord(x) & 31 for x in hrp]


def _convertbits(data: bytes | list[int], frombits: int, tobits: int, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    ret: list[int] = []
    maxv = (1 << tobits) - 1
    for value in data:
        if value < 0 or (value >> frombits):
            raise Bech32Error("invalid Bech32 data")
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            ret.append((acc >> bits) & maxv)
    if pad:
        if bits:
            ret.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or ((acc << (tobits - bits)) & maxv):
        raise Bech32Error("invalid Bech32 padding")
    return ret


def encode(hrp: str, data: bytes) -> str:
    """Encode ``data`` under human-readable part ``hrp`` (returned lower case)."""
    hrp = hrp.lower()
    values = _convertbits(data, 8, 5, True)
    polymod = _polymod([*_hrp_expand(hrp), *values, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[d] for d in values + checksum)


def decode(text: str) -> tuple[str, bytes]:
    """Decode a Bech32 string into ``(hrp, data)``; raise :class:`Bech32Error` if invalid.

    Mixed case is refused; the returned hrp is lower case.
    """
    if text.lower() != text and text.upper() != text:
        raise Bech32Error("a key string must not mix upper and lower case")
    if any(ord(c) < 33 or ord(c) > 126 for c in text):
        raise Bech32Error("a key string has characters outside printable ASCII")
    s = text.lower()
    pos = s.rfind("1")
    if pos < 1 or pos + 7 > len(s):
        raise Bech32Error("a key string is not Bech32 (no separator or too short)")
    hrp = s[:pos]
    try:
        values = [_CHARSET.index(c) for c in s[pos + 1 :]]
    except ValueError:
        raise Bech32Error("a key string has a character that is not Bech32") from None
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise Bech32Error("a key string's checksum is wrong (mistyped or damaged)")
    return hrp, bytes(_convertbits(values[:-6], 5, 8, False))
