"""How a node reaches another node (``/peer/v1``): the
:class:`~transfer.transport.base.PeerTransport` seam and its implementations.

- :mod:`transfer.transport.base`: the protocol the services call (the outbox, transfer
  requests, receipt pushes), its answer and its errors; no I/O of its own.
- :mod:`transfer.transport.http`: the signed aiohttp client a node uses in production.
- :mod:`transfer.transport.memory`: two nodes in one process, with injectable faults, for
  fast tests of the delivery logic.

This package's ``__init__`` imports none of them, so a service importing the base does
not import aiohttp.
"""
