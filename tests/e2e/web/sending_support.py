"""The web app with an outbox (in-process, on each engine): the test node's school sends
to a tiny real receiving node (:class:`tests.integration.exchange.outbox_support.TinyPeer`
on 127.0.0.1),
with a signed-directory view that also holds a second school (no node: nothing is ever
delivered to it) and an agency."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from keys.keyfiles import KeyFiles
from keys.keyset import KeySet
from keys.sealing import KekProtection
from tests.integration.exchange.outbox_support import (
    StaticDirectory,
    TinyPeer,
    config,
    running_peer,
)
from tests.support.web import WEB_KEY, Site, web_config
from tests.unit.auth.support import KEK, OTHER_URN, URN, open_node
from transfer.api import create_app
from transfer.exchange.outbox import Outbox
from transfer.transport.http import PeerClient
from transfer.web import WebServices

ELM_PARK = "199003"
MASH = "mash-bristol"


@dataclass
class SendingSite:
    site: Site
    outbox: Outbox
    peer: TinyPeer
    directory: StaticDirectory
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
            directory = StaticDirectory()
            directory.add(own, "Harbourside Primary", "http://127.0.0.1:1", urn=URN)
            directory.add(
                receiver, "Cliff Road Academy", peer.url, urn=OTHER_URN, town="Weston-super-Mare"
            )
            directory.add(KeySet.generate(ELM_PARK), "Elm Park School", None, urn=ELM_PARK)
            directory.add(KeySet.generate(MASH), "Bristol MASH", None, kind="social_care")
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
