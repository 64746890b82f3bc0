"""A node's parts assembled from its data directory: config, KEK, audit log, store, accounts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from keys.sealing import KekProtection
from keys.store import KeyStore
from receivers.agency_node import AgencyNodeRoute
from receivers.portal.service import PickupPortal
from transfer import aead
from transfer.alerts import Alerts
from transfer.api.request_ids import RequestIdAudit
from transfer.audit.log import AuditLog
from transfer.auth.service import Accounts
from transfer.config import CONFIG_FILE, Config, load_config, load_kek
from transfer.directory.service import Directory
from transfer.errors import ConfigError
from transfer.exchange.client import PeerClient
from transfer.exchange.inbox import Inbox
from transfer.exchange.outbox import Outbox
from transfer.exchange.witness import Witness
from transfer.mail import Mailer
from transfer.referrals.service import Referrals
from transfer.store.service import Store

if TYPE_CHECKING:
    from transfer.exchange.requests import LeaverFileQueue, PeerCaller, TransferRequests


#: The purpose label of the web app's key (see :func:`transfer.aead.purpose_key`).
WEB_KEY_LABEL = b"handover:web:v1"


@dataclass
class Node:
    data_dir: Path
    config: Config
    audit_log: AuditLog
    audit: RequestIdAudit
    store: Store
    accounts: Accounts
    keys: KeyStore
    directory: Directory
    portal: PickupPortal
    inbox: Inbox
    referrals: Referrals
    mailer: Mailer
    alerts: Alerts
    #: The signed client for calling other nodes, and the packages this node sends.
    peer: PeerClient
    outbox: Outbox
    #: The staff web app's key (sessions' CSRF tokens, kept forms): derived from the KEK
    #: with its own purpose label, so the web app never holds the KEK itself.
    web_key: bytes = b""

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
        directory = Directory(store, keys=keys, base_url=config.node.base_url)
        inbox = Inbox(
            store=store, kek=kek, keys=keys, directory=directory, config=config,
            data_dir=data_dir, audit_log=audit_log,
        )  # fmt: skip
        mailer = Mailer(config.smtp)
        alerts = Alerts(store, mailer)
        referrals = Referrals(store, keys, directory, alerts=alerts)
        portal = PickupPortal(
            store, keys, kek, base_url=config.node.base_url, mailer=mailer,
            acknowledgements=referrals,
        )  # fmt: skip
        peer = PeerClient(keys=keys, directory=directory, config=config)
        outbox = Outbox(
            store=store, keys=keys, directory=directory, client=peer, config=config,
            data_dir=data_dir,
        )  # fmt: skip
        # Referrals to an agency that runs a node follow their packages' receipts, and every
        # receipt's audit checkpoint is kept as a witness of the receiver's log.
        AgencyNodeRoute(referrals, outbox).attach()
        outbox.on_receipt.append(
            Witness(
                audit_log=audit_log, vkey_for=directory.audit_vkey_for, store=store, alerts=alerts
            ).on_receipt
        )
        return cls(
            data_dir, config, audit_log, audit, store, accounts, keys, directory, portal=portal,
            inbox=inbox, referrals=referrals, mailer=mailer, alerts=alerts, peer=peer,
            outbox=outbox, web_key=aead.purpose_key(kek, WEB_KEY_LABEL),
        )  # fmt: skip

    def transfer_requests(self, *, outbox: LeaverFileQueue, client: PeerCaller) -> TransferRequests:
        """The transfer-request service over this node's parts, an outbox and a peer client."""
        from transfer.exchange.requests import TransferRequests

        return TransferRequests(
            store=self.store, outbox=outbox, client=client, directory=self.directory,
            alerts=self.alerts, config=self.config,
        )  # fmt: skip

    async def close(self) -> None:
        await self.peer.close()
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
