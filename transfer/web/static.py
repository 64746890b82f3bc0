"""Static files of the web app, fingerprinted: ``/static/<hash>/<path>``.

The files are the package's ``static/`` folder (GOV.UK Frontend's compiled
stylesheet and script, vendored by ``scripts/update-govuk-frontend.sh``, and
ours). Each is read once at start-up; its URL carries the first 16 hex digits
of the SHA-256 of its content, so it is served with ``Cache-Control: public,
max-age=31536000, immutable`` and a new release changes the URL. A request for
an old or unknown hash gets 404. In our scripts, ``@static(path)`` is replaced by
that file's URL before hashing (a module importing another module).

Responses are compressed once, on first request, with brotli when the browser
offers it (and the ``brotli`` package is installed) or gzip; the result is kept.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Final

from aiohttp import web

try:  # brotli is optional: without it, gzip.
    import brotli as _brotli
except ImportError:  # pragma: no cover - exercised where the package is missing
    _brotli = None

PREFIX: Final = "/static"
IMMUTABLE: Final = "public, max-age=31536000, immutable"
_TYPES: Final = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
_REF = re.compile(r"@static\(([A-Za-z0-9_./-]+)\)")
_COMPRESSIBLE: Final = (".css", ".js", ".svg", ".txt")


@dataclass
class StaticFile:
    path: str
    body: bytes
    digest: str
    content_type: str
    _encoded: dict[str, bytes] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"{PREFIX}/{self.digest}/{self.path}"

    def encoded(self, coding: str) -> bytes:
        """The body compressed with ``coding`` (``br`` or ``gzip``), computed once."""
        if coding not in self._encoded:
            if coding == "br" and _brotli is not None:
                self._encoded[coding] = _brotli.compress(self.body, quality=11)
            else:
                self._encoded[coding] = gzip.compress(self.body, compresslevel=9, mtime=0)
        return self._encoded[coding]


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


def accepted_coding(accept_encoding: str) -> str | None:
    """``br`` or ``gzip`` if the browser offers it (brotli only when available)."""
    offered = {
        part.split(";", 1)[0].strip().lower()
        for part in accept_encoding.split(",")
        if not part.strip().endswith(";q=0")
    }
    if "br" in offered and _brotli is not None:
        return "br"
    if "gzip" in offered:
        return "gzip"
    return None


def compress(body: bytes, coding: str) -> bytes:
    if coding == "br" and _brotli is not None:
        return bytes(_brotli.compress(body, quality=5))
    return gzip.compress(body, compresslevel=6, mtime=0)


class StaticFiles:
    """Every static file of the package, by path and by fingerprinted URL."""

    def __init__(self, package: str = "transfer.web") -> None:
        root = resources.files(package).joinpath("static")
        raw: dict[str, bytes] = {}

        def walk(folder: resources.abc.Traversable, prefix: str) -> None:
            for item in folder.iterdir():
                name = f"{prefix}{item.name}"
                if item.is_dir():
                    walk(item, f"{name}/")
                elif any(name.endswith(ext) for ext in _TYPES) and item.name != "VERSION":
                    raw[name] = item.read_bytes()

        walk(root, "")
        self.files: dict[str, StaticFile] = {}
        # Files that refer to no other first, so that a reference finds its URL.
        pending = dict(sorted(raw.items(), key=lambda kv: b"@static(" in kv[1]))
        for path, body in pending.items():
            if path.endswith(".js"):
                body = _REF.sub(lambda m: self.url(m.group(1)), body.decode("utf-8")).encode()
            ext = path[path.rfind(".") :]
            self.files[path] = StaticFile(path, body, _digest(body), _TYPES[ext])

    def url(self, path: str) -> str:
        """The fingerprinted URL of ``path`` (raises KeyError for a file we do not have)."""
        return self.files[path].url

    def total_bytes(self, *paths: str) -> int:
        return sum(len(self.files[p].body) for p in paths)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info.get("digest", "")
        item = self.files.get(request.match_info.get("path", ""))
        if item is None or item.digest != digest:
            raise web.HTTPNotFound()
        headers = {
            "Content-Type": item.content_type,
            "Cache-Control": IMMUTABLE,
            "X-Content-Type-Options": "nosniff",
            "Cross-Origin-Resource-Policy": "same-origin",
            "Vary": "Accept-Encoding",
        }
        body = item.body
        coding = accepted_coding(request.headers.get("Accept-Encoding", ""))
        if coding and item.path.endswith(_COMPRESSIBLE):
            body = item.encoded(coding)
            headers["Content-Encoding"] = coding
        return web.Response(body=body, headers=headers)
