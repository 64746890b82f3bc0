"""The C2SP CCTV age test vectors (tests/assets/age-cctv), run through AgeReader.

Every vector without a post-quantum identity must give its expected outcome,
told apart by exception class, and release exactly the plaintext whose SHA-256
the vector names (also before a payload failure).
"""

from __future__ import annotations

import hashlib
import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from transfer.age import (
    AgeArmorError,
    AgeError,
    AgeHeaderError,
    AgeHMACError,
    AgeNoMatchError,
    AgePayloadError,
    AgeReader,
    Identity,
    ScryptIdentity,
    X25519Identity,
)
from transfer.errors import IntegrityError

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "age-cctv"
PQ_PREFIX = "AGE-SECRET-KEY-PQ-"

EXPECTED_ERROR: dict[str, type[AgeError]] = {
    "header failure": AgeHeaderError,
    "HMAC failure": AgeHMACError,
    "armor failure": AgeArmorError,
    "payload failure": AgePayloadError,
    "no match": AgeNoMatchError,
}


@dataclass
class Vector:
    name: str
    expect: str
    payload: str | None
    identities: list[str] = field(default_factory=list)
    passphrases: list[str] = field(default_factory=list)
    armored: bool = False
    body: bytes = b""

    @property
    def post_quantum(self) -> bool:
        return any(i.startswith(PQ_PREFIX) for i in self.identities)


def load(path: Path) -> Vector:
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    fields: dict[str, list[str]] = {}
    for line in head.decode("utf-8").splitlines():
        key, _, value = line.partition(": ")
        fields.setdefault(key, []).append(value)
    if fields.get("compressed") == ["zlib"]:
        body = zlib.decompress(body)
    return Vector(
        name=path.name,
        expect=fields["expect"][0],
        payload=fields.get("payload", [None])[0],
        identities=fields.get("identity", []),
        passphrases=fields.get("passphrase", []),
        armored=fields.get("armored") == ["yes"],
        body=body,
    )


ALL = sorted(
    (load(p) for p in ASSETS.iterdir() if p.name not in {"LICENSE", "PROVENANCE"}),
    key=lambda v: v.name,
)
RUN = [v for v in ALL if not v.post_quantum]
EXCLUDED = [v for v in ALL if v.post_quantum]


def test_vector_set_and_exclusion_filter() -> None:
    """Nothing is skipped silently: 143 vectors, exactly 19 post-quantum ones left out."""
    assert len(ALL) == 143
    assert len(EXCLUDED) == 19
    assert len(RUN) == 124
    assert all(v.name.startswith("hybrid") or "hybrid" in v.name for v in EXCLUDED)
    assert not any(i.startswith(PQ_PREFIX) for v in RUN for i in v.identities)
    # Every outcome kind is exercised by the vectors that run.
    assert {v.expect for v in RUN} == {"success", *EXPECTED_ERROR}


def identities_of(vector: Vector) -> list[Identity]:
    ids: list[Identity] = [X25519Identity.from_string(s) for s in vector.identities]
    ids += [ScryptIdentity(p.encode("utf-8")) for p in vector.passphrases]
    # Vectors that fail before any key is used name none: use an unrelated key.
    return ids or [X25519Identity.generate()]


def run(vector: Vector) -> tuple[bytes, AgeError | None]:
    """Decrypt, collecting what is released until the end or an error."""
    released = bytearray()
    try:
        reader = AgeReader(io.BytesIO(vector.body), identities_of(vector))
        while block := reader.read(10_000):
            released += block
    except AgeError as exc:
        return bytes(released), exc
    return bytes(released), None


@pytest.mark.parametrize("vector", RUN, ids=lambda v: v.name)
def test_cctv_vector(vector: Vector) -> None:
    released, error = run(vector)
    if vector.expect == "success":
        assert error is None, f"{vector.name}: {error!r}"
    else:
        assert error is not None, f"{vector.name}: expected {vector.expect}"
        assert type(error) is EXPECTED_ERROR[vector.expect], f"{vector.name}: {error!r}"
        assert isinstance(error, IntegrityError)
    if vector.payload is not None:
        assert hashlib.sha256(released).hexdigest() == vector.payload
    elif vector.expect != "success":
        assert released == b""


@pytest.mark.parametrize(
    "name", [v.name for v in RUN if v.expect == "payload failure" and v.payload]
)
def test_cctv_released_plaintext_with_readinto(name: str) -> None:
    """The same released plaintext through readinto (the path tarfile and copy loops use)."""
    vector = next(v for v in RUN if v.name == name)
    reader = AgeReader(io.BytesIO(vector.body), identities_of(vector))
    released = bytearray()
    buf = bytearray(7000)
    with pytest.raises(AgePayloadError):
        while n := reader.readinto(buf):
            released += buf[:n]
    assert hashlib.sha256(released).hexdigest() == vector.payload
