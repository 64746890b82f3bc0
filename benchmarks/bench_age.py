"""age files: ``handover age`` against Debian's ``age`` on a 1 GiB random file.

A 1 GiB file of ``os.urandom`` bytes is written to a temporary directory and an X25519 identity
is made with ``handover age keygen``. Then, in the same run, ``handover age encrypt`` and
``age -r`` each encrypt the file to that recipient, and ``handover age decrypt`` and ``age -d``
each decrypt their own output, every command ``RUNS`` times (the two tools alternating); the
median wall time is reported. Each decrypted file's SHA-256 must equal the input's. The peak
resident memory of every ``handover`` process is taken from ``wait4`` and the largest reported.
``HANDOVER_BENCH_AGE_MIB`` overrides the size in MiB.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024
SIZE_MIB = int(os.environ.get("HANDOVER_BENCH_AGE_MIB", "1024"))
RUNS = 3
CHUNK = 4 * MIB
TARGET_RATIO = 1.2


def _write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, CHUNK))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _measure(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed with exit status {proc.returncode}")
    return wall, usage.ru_maxrss / 1024


def _handover() -> str:
    beside = Path(sys.executable).with_name("handover")
    if beside.exists():
        return str(beside)
    found = shutil.which("handover")
    if found is None:
        raise RuntimeError("handover CLI not found (run `make venv`)")
    return found


def _keygen(handover: str, key_file: Path) -> str:
    """Make an identity with ``handover age keygen`` and return its ``age1...`` recipient."""
    done = subprocess.run(
        [handover, "age", "keygen", "-o", str(key_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    text = done.stderr + "\n" + key_file.read_text(encoding="utf-8")
    match = re.search(r"(?:Public key|# public key):\s*(age1[0-9a-z]+)", text)
    if match is None:
        raise RuntimeError("no public key in handover age keygen's output")
    return match.group(1)


def _unlink(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def run() -> str:
    age = shutil.which("age")
    if age is None:
        return (
            "## age files: `handover age` against `age`\n\n"
            "`benchmarks/bench_age.py`: skipped, `age` is not installed.\n"
        )
    handover = _handover()
    times: dict[str, list[float]] = {"h_enc": [], "a_enc": [], "h_dec": [], "a_dec": []}
    rss: dict[str, float] = {"h_enc": 0.0, "h_dec": 0.0}
    with tempfile.TemporaryDirectory(prefix="bench-age-") as tmp_name:
        tmp = Path(tmp_name)
        src, key = tmp / "in.bin", tmp / "key.txt"
        h_out, a_out = tmp / "out.age", tmp / "out2.age"
        h_dec, a_dec = tmp / "dec.bin", tmp / "dec2.bin"
        try:
            expected = _write_random(src, SIZE_MIB * MIB)
            recipient = _keygen(handover, key)
            for _ in range(RUNS):
                _unlink(h_out, a_out)
                wall, peak = _measure(
                    [handover, "age", "encrypt", "-r", recipient, "-o", str(h_out), str(src)]
                )
                times["h_enc"].append(wall)
                rss["h_enc"] = max(rss["h_enc"], peak)
                wall, _ = _measure([age, "-r", recipient, "-o", str(a_out), str(src)])
                times["a_enc"].append(wall)
            for _ in range(RUNS):
                _unlink(h_dec, a_dec)
                wall, peak = _measure(
                    [handover, "age", "decrypt", "-i", str(key), "-o", str(h_dec), str(h_out)]
                )
                times["h_dec"].append(wall)
                rss["h_dec"] = max(rss["h_dec"], peak)
                wall, _ = _measure([age, "-d", "-i", str(key), "-o", str(a_dec), str(a_out)])
                times["a_dec"].append(wall)
                for out in (h_dec, a_dec):
                    if _sha256(out) != expected:
                        raise RuntimeError(f"{out.name}: SHA-256 differs from the input's")
        finally:
            _unlink(src, key, h_out, a_out, h_dec, a_dec)
    med = {name: statistics.median(values) for name, values in times.items()}
    enc_ratio = med["h_enc"] / med["a_enc"]
    dec_ratio = med["h_dec"] / med["a_dec"]

    def verdict(ratio: float) -> str:
        return "yes" if ratio <= TARGET_RATIO else "no"

    def runs(name: str) -> str:
        return ", ".join(f"{v:.2f}" for v in times[name])

    return (
        f"## age files: `handover age` against `age` ({SIZE_MIB} MiB)\n\n"
        f"`benchmarks/bench_age.py`, run by `make bench` (alone: `.venv/bin/python -m "
        f"benchmarks bench_age`). A {SIZE_MIB} MiB file of `os.urandom` bytes, one X25519 "
        f"identity from `handover age keygen`; in the same run `handover age encrypt -r R -o "
        f"out.age in.bin` vs `age -r R -o out2.age in.bin`, and `handover age decrypt -i key.txt "
        f"-o dec.bin out.age` vs `age -d -i key.txt -o dec2.bin out2.age`, each {RUNS} times "
        f"(the two tools alternating, file to file on local disk). Times are the median wall "
        f"time; both decrypted files' SHA-256 matched the input's on every run. Peak RSS is "
        f"the largest `ru_maxrss` (from `wait4`) of the `handover` processes, interpreter "
        f"included. The aim is handover / age <= {TARGET_RATIO}.\n\n"
        "| operation | handover | age | handover / age | within 1.2 | handover peak RSS |\n"
        "|---|---|---|---|---|---|\n"
        f"| encrypt | {med['h_enc']:.2f} s | {med['a_enc']:.2f} s | {enc_ratio:.2f} | "
        f"{verdict(enc_ratio)} | {rss['h_enc']:.1f} MiB |\n"
        f"| decrypt | {med['h_dec']:.2f} s | {med['a_dec']:.2f} s | {dec_ratio:.2f} | "
        f"{verdict(dec_ratio)} | {rss['h_dec']:.1f} MiB |\n\n"
        f"Every run (s): handover encrypt {runs('h_enc')}; age encrypt {runs('a_enc')}; "
        f"handover decrypt {runs('h_dec')}; age decrypt {runs('a_dec')}.\n"
    )
