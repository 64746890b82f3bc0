"""Reading a subject access export archive (a tar stream) in tests, with the standard library."""

from __future__ import annotations

import io
import tarfile

from transfer.store.subject_access import SubjectAccessArchive


def files_of(data: bytes) -> dict[str, bytes]:
    """Every regular file of a tar archive, by path, in archive order."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar.getmembers():
            assert member.isfile(), member.name
            extracted = tar.extractfile(member)
            assert extracted is not None
            out[member.name] = extracted.read()
    return out


async def unpack(archive: SubjectAccessArchive) -> dict[str, bytes]:
    """Read the whole stream of ``archive`` and return its files."""
    return files_of(b"".join([piece async for piece in archive.chunks]))
