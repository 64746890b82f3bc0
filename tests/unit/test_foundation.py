from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from keys import aead, bech32
from transfer.config import load_config, load_kek
from transfer.errors import ConfigError


def test_bech32_round_trip_and_checksum() -> None:
    data = os.urandom(32)
    s = bech32.encode("age", data)
    assert s.startswith("age1")
    assert bech32.decode(s) == ("age", data)
    assert bech32.decode(s.upper()) == ("age", data)
    broken = s[:-1] + ("q" if s[-1] != "q" else "p")
    with pytest.raises(bech32.Bech32Error, match="checksum"):
        bech32.decode(broken)


def test_aead_binds_purpose() -> None:
    key = aead.new_key()
    sealed = aead.seal(key, b"secret", b"purpose-a")
    assert aead.unseal(key, sealed, b"purpose-a") == b"secret"
    with pytest.raises(aead.UnsealError):
        aead.unseal(key, sealed, b"purpose-b")
    with pytest.raises(aead.UnsealError):
        aead.unseal(aead.new_key(), sealed, b"purpose-a")


def test_config_names_bad_value(tmp_path: Path) -> None:
    (tmp_path / "handover.toml").write_text("[server]\nport = 70000\n")
    with pytest.raises(ConfigError, match=r"server\.port"):
        load_config(tmp_path, environ={})
    (tmp_path / "handover.toml").write_text("[server]\nprot = 1\n")
    with pytest.raises(ConfigError, match="not a known setting"):
        load_config(tmp_path, environ={})
    (tmp_path / "handover.toml").write_text("")
    with pytest.raises(ConfigError, match=r"database\.url"):
        load_config(tmp_path, environ={"HANDOVER_DATABASE__URL": "mysql://x"})


def test_kek_must_be_outside_data_dir(tmp_path: Path) -> None:
    (tmp_path / "handover.toml").write_text(f'[security]\nkek_file = "{tmp_path / "kek"}"\n')
    with pytest.raises(ConfigError, match="outside the data directory"):
        load_config(tmp_path, environ={})
    cfg = load_config(tmp_path / "sub", environ={})
    assert load_kek(cfg, {"HANDOVER_KEK": "ab" * 32}) == bytes([0xAB]) * 32
    with pytest.raises(ConfigError, match="32 bytes"):
        load_kek(cfg, {"HANDOVER_KEK": "abcd"})


@pytest.mark.postgres
def test_real_postgres_answers(pg_url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def go() -> str:
        engine = create_async_engine(pg_url)
        async with engine.connect() as conn:
            version = (await conn.execute(text("show server_version"))).scalar_one()
        await engine.dispose()
        return str(version)

    assert asyncio.run(go()).startswith("15")
