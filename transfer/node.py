"""A node's parts assembled from its data directory: config, KEK, audit log, store, accounts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from keys import aead
from keys.keyfiles import KeyFiles
from keys.sealing import KekProtection
from receivers.agency_node import AgencyNodeRoute
from receivers.portal.service import PickupPortal, PortalSettings
from transfer.alerts import Alerts
from transfer.alerts.rules import StoreAlerts
from transfer.audit.log import AuditLog
from transfer.audit.request_ids import RequestIdAudit
from transfer.auth.service import Accounts
from transfer.config import CONFIG_FILE, Config, kek_source, load_config, load_kek
from transfer.directory.service import Directory
from transfer.errors import ConfigError
from transfer.exchange.deadlines_sweep import DeadlineSweep
from transfer.exchange.inbox import Inbox
from transfer.exchange.outbox import Outbox, OutgoingRecord
from transfer.exchange.witness import Witness
from transfer.identity import NodeIdentity, establish, prepare_database
from transfer.mail import Mailer
from transfer.referrals.service import Referrals
from transfer.store.service import Store
from transfer.transport.base import PeerTransport, TransportFactory

if TYPE_CHECKING:
    from transfer.exchange.requests import LeaverFileQueue, PeerJsonClient, TransferRequests
    from transfer.receipts import SignedReceipt


def _deadline_on_receipt(
    deadlines: DeadlineSweep,
) -> Callable[[OutgoingRecord, SignedReceipt], Awaitable[None]]:
    async def check(record: OutgoingRecord, _receipt: SignedReceipt) -> None:
        if record.kind == "leaver_file":
            await deadlines.run(pupil_ids=record.pupil_ids)

    return check


#: The purpose label of the web app's key (see :func:`keys.aead.purpose_key`).
WEB_KEY_LABEL = b"handover:web:v1"


@dataclass
class Node:
    data_dir: Path
    config: Config
    audit_log: AuditLog
    audit: RequestIdAudit
    store: Store
    accounts: Accounts
    keys: KeyFiles
    directory: Directory
    portal: PickupPortal
    inbox: Inbox
    referrals: Referrals
    mailer: Mailer
    alerts: Alerts
    #: How this node calls other nodes (the transport the face gave :meth:`open`), and the
    #: packages this node sends.
    peer: PeerTransport
    outbox: Outbox
    #: KCSIE deadline alerts (the scheduler's sweep, and at once when a leaver changes),
    #: and the alerts raised as the store's data changes (concerns, overdue actions).
    deadlines: DeadlineSweep
    store_alerts: StoreAlerts
    #: The staff web app's key (sessions' CSRF tokens, kept forms): derived from the KEK
    #: with its own purpose label, so the web app never holds the KEK itself.
    web_key: bytes = b""

    @classmethod
    async def open(
        cls,
        data_dir: Path,
        *,
        transport: TransportFactory,
        require_init: bool = True,
        full_check: bool = False,
    ) -> Node:
        """Assemble the node in ``data_dir``, after checking its database and KEK.

        ``transport`` makes the node's way to other nodes from its keys, directory and
        config: :func:`transfer.transport.http.http_transport` in every face (the services
        never import aiohttp), an in-memory one in tests.

        Refuses (before anything is read or written) a missing, empty, damaged or
        another node's database and a wrong KEK (:func:`transfer.identity.prepare_database`).
        ``full_check`` reads the whole SQLite file for damage first (``serve`` does).
        """
        if require_init and not (data_dir / CONFIG_FILE).exists():
            raise ConfigError(
                f"{data_dir} is not a Handover data directory: run 'handover init "
                f"--data-dir {data_dir}' first"
            )
        config = load_config(data_dir)
        kek = load_kek(config)
        url = config.database_url(data_dir)
        audit_log = AuditLog.for_node(data_dir, config, kek)
        audit = RequestIdAudit(audit_log)
        store = await Store.open(
            url,
            kek,
            audit,
            data_dir=data_dir,
            max_document_bytes=config.server.max_upload_bytes,
            run_migrations=False,
        )
        try:
            await prepare_database(
                store.engine,
                kek,
                data_dir=data_dir,
                url=url,
                kek_source=kek_source(config),
                full_check=full_check,
            )
            await store.finish_upgrade()
        except BaseException:
            await store.close()
            await audit_log.close()
            raise
        keys = KeyFiles.for_data_dir(data_dir, KekProtection(kek), audit=audit)
        directory = Directory(store, keys=keys, base_url=config.node.base_url)
        inbox = Inbox(
            store=store,
            kek=kek,
            keys=keys,
            directory=directory,
            config=config,
            data_dir=data_dir,
            audit_log=audit_log,
        )
        mailer = Mailer(config.smtp)
        alerts = Alerts(store, mailer)
        accounts = Accounts(store, kek, audit, config.security, alerts=alerts)
        referrals = Referrals(store, keys, directory, alerts=alerts)
        portal = PickupPortal(
            store,
            keys,
            kek,
            base_url=config.node.base_url,
            mailer=mailer,
            acknowledgements=referrals,
            alerts=alerts,
            settings=PortalSettings(ack_grace_minutes=config.portal.ack_grace_minutes),
        )
        peer = transport(keys, directory, config)
        outbox = Outbox(
            store=store,
            keys=keys,
            directory=directory,
            client=peer,
            config=config,
            data_dir=data_dir,
        )
        # Referrals to an agency that runs a node follow their packages' receipts, and every
        # receipt's audit checkpoint is kept as a witness of the receiver's log.
        AgencyNodeRoute(referrals, outbox).attach()
        outbox.on_receipt.append(
            Witness(
                audit_log=audit_log, vkey_for=directory.audit_vkey_for, store=store, alerts=alerts
            ).on_receipt
        )
        # Alerts as soon as the data changes: a leaving date, a concern, an action; and a
        # leaver's file's receipt settles its deadline at once.
        deadlines = DeadlineSweep(store, alerts, outbox, config.transfer, data_dir=data_dir)
        store_alerts = StoreAlerts(store, alerts, deadlines, base_url=config.node.base_url)
        store_alerts.attach()
        outbox.on_receipt.append(_deadline_on_receipt(deadlines))
        return cls(
            data_dir,
            config,
            audit_log,
            audit,
            store,
            accounts,
            keys,
            directory,
            portal=portal,
            inbox=inbox,
            referrals=referrals,
            mailer=mailer,
            alerts=alerts,
            peer=peer,
            outbox=outbox,
            deadlines=deadlines,
            store_alerts=store_alerts,
            web_key=aead.purpose_key(kek, WEB_KEY_LABEL),
        )

    def transfer_requests(
        self, *, outbox: LeaverFileQueue, client: PeerJsonClient
    ) -> TransferRequests:
        """The transfer-request service over this node's parts, an outbox and a peer client."""
        from transfer.exchange.requests import TransferRequests

        return TransferRequests(
            store=self.store,
            outbox=outbox,
            client=client,
            directory=self.directory,
            alerts=self.alerts,
            config=self.config,
        )

    async def establish_identity(self) -> NodeIdentity:
        """``handover init``: tie the data directory, database and KEK together (idempotent)."""
        return await establish(self.store.engine, load_kek(self.config), self.data_dir)

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
