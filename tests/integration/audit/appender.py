"""A separate OS process that appends to the audit log (used by the concurrency test).

Usage: python -m tests.integration.audit.appender URL TAG COUNT START_FILE
Prints the JSON list of sequence numbers it was given.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from schemas.auditing import AuditEvent
from transfer.audit.log import AuditLog

KEK = bytes(range(32))


async def main(url: str, tag: str, count: int) -> list[int]:
    log = AuditLog.open(url, KEK, origin="school-a.example/audit")
    try:
        seqs: list[int] = []
        half = count // 2

        async def one(i: int) -> None:
            seqs.append(
                await log.append(AuditEvent("test.append", actor=tag, request_id=f"{tag}-{i}"))
            )

        # Half as concurrent single appends (group-committed), half as small batches.
        await asyncio.gather(*(one(i) for i in range(half)))
        for j in range(half, count, 5):
            events = [
                AuditEvent("test.append", actor=tag, request_id=f"{tag}-{i}")
                for i in range(j, min(j + 5, count))
            ]
            seqs.extend(await log.append_many(events))
        return seqs
    finally:
        await log.close()


if __name__ == "__main__":
    start = Path(sys.argv[4])
    while not start.exists():  # every process starts appending at the same moment
        time.sleep(0.005)
    out = asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    print(json.dumps(out))
