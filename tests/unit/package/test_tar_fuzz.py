"""Random damage to a package's tar stream is always refused with a Handover error.

Whatever the bytes, the reader raises only :class:`HandoverError` subclasses
(never ``ValueError``, ``UnicodeError``, ``IndexError``...), so every refusal
reaches the user as one clear line.
"""

from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.package.support import parties, plain_package
from transfer.errors import HandoverError
from transfer.package.layout import Limits, read_package_tar
from transfer.package.tar import TarReader

P = parties()
GOOD = plain_package(P)


def _end_of_archive(data: bytes) -> int:
    reader = TarReader(io.BytesIO(data), max_total=len(data))
    while reader.next() is not None:
        pass
    return reader.consumed


END = _end_of_archive(GOOD)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(GOOD) - 1), st.integers(1, 255)), min_size=1, max_size=4
    ),
    cut=st.one_of(st.none(), st.integers(0, len(GOOD))),
)
def test_damaged_tar_streams_are_refused_cleanly(
    edits: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(GOOD)
    for pos, xor in edits:
        data[pos] ^= xor
    if cut is not None:
        del data[cut:]
    try:
        read_package_tar(
            io.BytesIO(bytes(data)),
            sender_keys=P.sender_keys,
            addressee=P.addressee,
            limits=Limits(max_total_bytes=1_000_000),
        )
    except HandoverError as exc:
        assert "\n" not in str(exc)
    else:
        # Only damage to bytes nobody reads (padding, unused header fields) may pass,
        # and then every entry was still checked against the signed manifest.
        assert cut is None or cut >= END
