"""The headers every response of the node carries, whoever wrote it.

The application's middleware adds them to its own responses (streamed ones included);
the listener (:mod:`transfer.api.listener`) adds them to the answers aiohttp writes by
itself (a request it could not parse) and to a refused connection's answer.
"""

from __future__ import annotations

from typing import Final

SECURITY_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; sandbox",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Strict-Transport-Security": "max-age=31536000",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

#: What the ``Server`` header says: the product, never a version of it or of aiohttp
#: (which would tell an attacker which published flaws to try).
SERVER: Final = "Handover"
