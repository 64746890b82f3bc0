"""RFC 8941 Structured Field Values: the strict Dictionary parser and the serializer that
HTTP Message Signatures (:mod:`transfer.httpsig`) need for its ``Signature-Input`` and
``Signature`` headers.

Pure: the standard library only.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeAlias

from transfer.errors import InputError

__all__ = [
    "BareItem",
    "InnerList",
    "Item",
    "Member",
    "Params",
    "StructuredFieldError",
    "Token",
    "parse_dictionary",
    "serialize_bare",
    "serialize_inner_list",
    "serialize_params",
    "serialize_string",
]


@dataclass(frozen=True)
class Token:
    """An RFC 8941 Token (unquoted)."""

    value: str


BareItem: TypeAlias = bool | int | Decimal | str | bytes | Token
Params: TypeAlias = tuple[tuple[str, BareItem], ...]


@dataclass(frozen=True)
class Item:
    value: BareItem
    params: Params = ()


@dataclass(frozen=True)
class InnerList:
    items: tuple[Item, ...]
    params: Params = ()


Member: TypeAlias = Item | InnerList

_LCALPHA = frozenset("abcdefghijklmnopqrstuvwxyz")
_DIGITS = frozenset("0123456789")
_ALPHA = _LCALPHA | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_KEY_CHARS = _LCALPHA | _DIGITS | frozenset("_-.*")
_TCHAR = _ALPHA | _DIGITS | frozenset("!#$%&'*+-.^_`|~")
_B64_CHARS = _ALPHA | _DIGITS | frozenset("+/=")


class StructuredFieldError(ValueError):
    """The text is not a valid Structured Field; the message says where, for a person."""


class _Parser:
    """RFC 8941 section 4.2: a strict parser for Dictionaries (all we need)."""

    def __init__(self, text: str) -> None:
        if not text.isascii():
            raise StructuredFieldError("it contains characters outside ASCII")
        self.s = text.strip(" ")
        self.i = 0

    def _peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def _skip(self, chars: str) -> None:
        while self.i < len(self.s) and self.s[self.i] in chars:
            self.i += 1

    def dictionary(self) -> dict[str, Member]:
        out: dict[str, Member] = {}
        while self.i < len(self.s):
            key = self._key()
            member: Member
            if self._peek() == "=":
                self.i += 1
                member = self._item_or_inner_list()
            else:
                member = Item(True, self._params())
            if key in out:
                raise StructuredFieldError(f"the member {key!r} appears twice")
            out[key] = member
            self._skip(" \t")
            if self.i >= len(self.s):
                return out
            if self._peek() != ",":
                raise StructuredFieldError(f"expected ',' at position {self.i}")
            self.i += 1
            self._skip(" \t")
            if self.i >= len(self.s):
                raise StructuredFieldError("it ends with a trailing ','")
        return out

    def _item_or_inner_list(self) -> Member:
        if self._peek() == "(":
            return self._inner_list()
        return Item(self._bare_item(), self._params())

    def _inner_list(self) -> InnerList:
        self.i += 1
        items: list[Item] = []
        while self.i < len(self.s):
            self._skip(" ")
            if self._peek() == ")":
                self.i += 1
                return InnerList(tuple(items), self._params())
            items.append(Item(self._bare_item(), self._params()))
            if self._peek() not in (" ", ")"):
                raise StructuredFieldError(
                    f"expected ' ' or ')' in an inner list at position {self.i}"
                )
        raise StructuredFieldError("an inner list is not closed with ')'")

    def _params(self) -> Params:
        params: list[tuple[str, BareItem]] = []
        seen: set[str] = set()
        while self._peek() == ";":
            self.i += 1
            self._skip(" ")
            key = self._key()
            value: BareItem = True
            if self._peek() == "=":
                self.i += 1
                value = self._bare_item()
            if key in seen:
                raise StructuredFieldError(f"the parameter {key!r} appears twice")
            seen.add(key)
            params.append((key, value))
        return tuple(params)

    def _key(self) -> str:
        start = self.i
        if self._peek() not in _LCALPHA and self._peek() != "*":
            raise StructuredFieldError(f"expected a lower-case key at position {self.i}")
        while self.i < len(self.s) and self.s[self.i] in _KEY_CHARS:
            self.i += 1
        return self.s[start : self.i]

    def _bare_item(self) -> BareItem:
        c = self._peek()
        if c == "-" or c in _DIGITS:
            return self._number()
        if c == '"':
            return self._string()
        if c == ":":
            return self._bytes()
        if c == "?":
            return self._boolean()
        if c in _ALPHA or c == "*":
            return self._token()
        raise StructuredFieldError(
            f"unexpected {c!r} at position {self.i}" if c else "it ends too early"
        )

    def _number(self) -> int | Decimal:
        start = self.i
        if self._peek() == "-":
            self.i += 1
        if self._peek() not in _DIGITS:
            raise StructuredFieldError(f"expected a digit at position {self.i}")
        self._skip("0123456789")
        int_digits = self.i - start - (self.s[start] == "-")
        if self._peek() != ".":
            if int_digits > 15:
                raise StructuredFieldError("an integer has more than 15 digits")
            return int(self.s[start : self.i])
        if int_digits > 12:
            raise StructuredFieldError("a decimal has more than 12 integer digits")
        self.i += 1
        frac = self.i
        self._skip("0123456789")
        if not 1 <= self.i - frac <= 3:
            raise StructuredFieldError("a decimal must have 1 to 3 fractional digits")
        return Decimal(self.s[start : self.i])

    def _string(self) -> str:
        self.i += 1
        out: list[str] = []
        while self.i < len(self.s):
            c = self.s[self.i]
            self.i += 1
            if c == "\\":
                nxt = self._peek()
                if nxt not in ('"', "\\"):
                    raise StructuredFieldError("a string has a '\\' not followed by '\"' or '\\'")
                out.append(nxt)
                self.i += 1
            elif c == '"':
                return "".join(out)
            elif not " " <= c <= "~":
                raise StructuredFieldError("a string contains a control character")
            else:
                out.append(c)
        raise StructuredFieldError("a string is not closed with '\"'")

    def _token(self) -> Token:
        start = self.i
        self.i += 1
        while self.i < len(self.s) and (self.s[self.i] in _TCHAR or self.s[self.i] in ":/"):
            self.i += 1
        return Token(self.s[start : self.i])

    def _bytes(self) -> bytes:
        self.i += 1
        end = self.s.find(":", self.i)
        if end < 0:
            raise StructuredFieldError("a byte sequence is not closed with ':'")
        text = self.s[self.i : end]
        self.i = end + 1
        if any(c not in _B64_CHARS for c in text):
            raise StructuredFieldError("a byte sequence is not base64")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise StructuredFieldError("a byte sequence is not valid, padded base64") from None

    def _boolean(self) -> bool:
        self.i += 1
        c = self._peek()
        if c not in ("0", "1"):
            raise StructuredFieldError("a boolean must be ?0 or ?1")
        self.i += 1
        return c == "1"


def parse_dictionary(text: str) -> dict[str, Member]:
    """The Dictionary in ``text`` (RFC 8941 section 4.2), or :class:`StructuredFieldError`."""
    return _Parser(text).dictionary()


def serialize_string(value: str) -> str:
    if not all(" " <= c <= "~" for c in value):
        raise InputError("a signature parameter may hold only printable ASCII characters")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serialize_bare(value: BareItem) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        text = format(value.quantize(Decimal("0.001")).normalize(), "f")
        return text if "." in text else text + ".0"
    if isinstance(value, str):
        return serialize_string(value)
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode("ascii") + ":"
    return value.value


def serialize_params(params: Params) -> str:
    return "".join(f";{k}" if v is True else f";{k}={serialize_bare(v)}" for k, v in params)


def serialize_inner_list(inner: InnerList) -> str:
    items = " ".join(serialize_bare(i.value) + serialize_params(i.params) for i in inner.items)
    return f"({items}){serialize_params(inner.params)}"
