"""A node's parts assembled from its data directory: config, KEK, audit log, store, accounts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from keys.sealing import KekProtection
from keys.store import KeyStore
from transfer.api.request_ids import RequestIdAudit
from transfer.audit.log import AuditLog
from transfer.auth.service import Accounts
from transfer.config import CONFIG_FILE, Config, load_config, load_kek
from transfer.errors import ConfigError
from transfer.store.service import Store


@dataclass
class Node:
    data_dir: Path
    config: Config
    audit_log: AuditLog
    audit: RequestIdAudit
    store: Store
    accounts: Accounts
    keys: KeyStore

    @classmethod
    async def open(cls, data_dir: Path, *, require_init: bool = True) -> Node:
        if require_init and not (data_dir / CONFIG_FILE).exists():
            raise ConfigError(
                f"{data_dir} is not a Handover data directory: run 'handover init "
                f"--data-dir {data_dir}' first"
            )
        config = load_config(data_dir)
        kek = load_kek(config)
        audit_log = AuditLog.for_node(data_dir, config, kek)
        audit = RequestIdAudit(audit_log)
        store = await Store.open(
            config.database_url(data_dir),
            kek,
            audit,
            data_dir=data_dir,
            max_document_bytes=config.server.max_upload_bytes,
        )
        accounts = Accounts(store, kek, audit, config.security)
        keys = KeyStore.for_data_dir(data_dir, KekProtection(kek), audit=audit)
        return cls(data_dir, config, audit_log, audit, store, accounts, keys)

    async def close(self) -> None:
        await self.store.close()
        await self.audit_log.close()

    async def __aenter__(self) -> Node:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
