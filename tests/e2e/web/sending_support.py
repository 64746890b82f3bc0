"""The web app with an outbox (in-process, on each engine): the test node's school sends
to a tiny real receiving node (:class:`tests.integration.exchange.outbox_support.TinyPeer`
on 127.0.0.1),
with a signed-directory view that also holds a second school (no node: nothing is ever
delivered to it) and an agency."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from keys.keyfiles import KeyFiles
from keys.keyset import KeySet
from keys.sealing import KekProtection
from schemas.directory import DirectoryEntry, OrgKind
from tests.integration.exchange.outbox_support import TinyPeer, config, running_peer
from tests.support.web import WEB_KEY, Site, web_config
from tests.unit.auth.support import KEK, OTHER_URN, URN, open_node
from transfer.api import create_app
from transfer.directory.document import entry_from_keyset
from transfer.errors import AuthenticationError, NotFoundError
from transfer.exchange.outbox import Outbox
from transfer.transport.http import PeerClient
from transfer.web import WebServices

ELM_PARK = "199003"
MASH = "mash-bristol"


class Directory:
    """A directory view over fixed entries (what the outbox and the pages read of it)."""

    def __init__(self) -> None:
        self.by_id: dict[str, DirectoryEntry] = {}
        self.keys: dict[str, bytes] = {}

    def add(
        self,
        keyset: KeySet,
        name: str,
        kind: OrgKind,
        endpoint: str | None,
        urn: str | None = None,
        town: str | None = None,
    ) -> None:
        self.by_id[keyset.org_id] = entry_from_keyset(
            keyset, name=name, kind=kind, endpoint=endpoint, urn=urn, town=town
        )
        self.keys[keyset.key_id_hex] = keyset.minisign_public_key.key

    async def entries(self) -> list[DirectoryEntry]:
        return list(self.by_id.values())

    async def entry(self, org_id: str) -> DirectoryEntry:
        try:
            return self.by_id[org_id]
        except KeyError:
            raise NotFoundError(f"organisation {org_id} is not in the directory") from None

    async def signing_public_key(self, key_id: str, at: datetime) -> bytes:
        try:
            return self.keys[key_id]
        except KeyError:
            raise NotFoundError(f"no key {key_id}") from None

    async def signer(self, key_id: str, at: datetime) -> tuple[DirectoryEntry, bytes]:
        for entry in self.by_id.values():
            if key_id in entry.key_ids() and key_id in self.keys:
                return entry, self.keys[key_id]
        raise AuthenticationError(f"no organisation has the key {key_id}")


@dataclass
class SendingSite:
    site: Site
    outbox: Outbox
    peer: TinyPeer
    directory: Directory
    receiver: KeySet


@asynccontextmanager
async def sending_site(db_url: str, tmp_path: Path) -> AsyncIterator[SendingSite]:
    data_dir = tmp_path / "data"
    async with open_node(db_url, data_dir) as node:
        cfg = web_config()
        cfg = cfg.model_copy(update={"transfer": config().transfer})
        node.accounts.security = cfg.security
        keys = KeyFiles(data_dir / "keys", KekProtection(KEK))
        own = await keys.create(URN)
        receiver = KeySet.generate(OTHER_URN)
        peer = TinyPeer(keyset=receiver, sender_keys={own.key_id_hex: own.minisign_public_key.key})
        async with running_peer(peer):
            directory = Directory()
            directory.add(own, "Harbourside Primary", "school", "http://127.0.0.1:1", URN)
            directory.add(
                receiver,
                "Cliff Road Academy",
                "school",
                peer.url,
                OTHER_URN,
                town="Weston-super-Mare",
            )
            directory.add(KeySet.generate(ELM_PARK), "Elm Park School", "school", None, ELM_PARK)
            directory.add(KeySet.generate(MASH), "Bristol MASH", "social_care", None)
            client = PeerClient(keys=keys, directory=directory, config=cfg)
            outbox = Outbox(
                store=node.store,
                keys=keys,
                directory=directory,
                client=client,
                config=cfg,
                data_dir=data_dir,
                worker_id="web",
                uniform=lambda: 0.5,
            )
            app = create_app(
                store=node.store,
                accounts=node.accounts,
                audit=node.audit,
                config=cfg,
                web_pages=WebServices(
                    store=node.store,
                    accounts=node.accounts,
                    config=cfg,
                    audit=node.audit,
                    web_key=WEB_KEY,
                    outbox=outbox,
                    directory=directory,
                ),
            )
            try:
                async with TestClient(TestServer(app)) as test_client:
                    yield SendingSite(Site(node, test_client), outbox, peer, directory, receiver)
            finally:
                await client.close()


__all__ = ["ELM_PARK", "MASH", "OTHER_URN", "URN", "SendingSite", "sending_site"]
