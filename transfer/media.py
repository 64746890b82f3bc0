"""What kind of file a document is, from its first bytes: never from what the uploader says.

An upload's declared type (a form's ``Content-Type``, a file name) is whatever
the sending program put there; ``application/x-www-form-urlencoded`` for a file
sent with ``curl -d``. The store names a document's media type by looking at
its content ("magic bytes") and accepts only the kinds a safeguarding file
holds: PDF, images (PNG, JPEG, GIF, WebP, TIFF, HEIC), plain text, Word, Excel
and PowerPoint documents (Office Open XML and the older binary formats),
OpenDocument, RTF and Outlook messages. Anything else is refused with
:class:`UnsupportedDocumentType`, before anything is kept.

The file name is looked at only to tell apart formats that share one
container (a ``.doc`` and an ``.xls`` are both OLE2 compound files) and never
decides on its own. Pure: no I/O.
"""

from __future__ import annotations

import codecs
import re
from typing import Final

from transfer.errors import InputError

__all__ = [
    "ALLOWED",
    "SNIFF_BYTES",
    "UnsupportedDocumentType",
    "sniff_media_type",
]

#: How much of the start of a file is looked at (a zip's first entries fit in it).
SNIFF_BYTES: Final = 64 * 1024

PDF: Final = "application/pdf"
TEXT_UTF8: Final = "text/plain; charset=utf-8"
TEXT_1252: Final = "text/plain; charset=windows-1252"
DOCX: Final = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX: Final = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX: Final = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
ODT: Final = "application/vnd.oasis.opendocument.text"
ODS: Final = "application/vnd.oasis.opendocument.spreadsheet"
ODP: Final = "application/vnd.oasis.opendocument.presentation"

#: Every media type a document may have, with what people call it.
ALLOWED: Final[dict[str, str]] = {
    PDF: "PDF",
    "image/png": "PNG image",
    "image/jpeg": "JPEG image",
    "image/gif": "GIF image",
    "image/webp": "WebP image",
    "image/tiff": "TIFF image",
    "image/heic": "HEIC photo",
    TEXT_UTF8: "plain text",
    TEXT_1252: "plain text",
    "application/rtf": "RTF document",
    DOCX: "Word document",
    XLSX: "Excel workbook",
    PPTX: "PowerPoint presentation",
    "application/msword": "Word 97-2003 document",
    "application/vnd.ms-excel": "Excel 97-2003 workbook",
    "application/vnd.ms-powerpoint": "PowerPoint 97-2003 presentation",
    "application/vnd.ms-outlook": "Outlook message",
    ODT: "OpenDocument text",
    ODS: "OpenDocument spreadsheet",
    ODP: "OpenDocument presentation",
}

_OLE2: Final = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_OLE2_BY_EXTENSION: Final = {
    "doc": "application/msword",
    "dot": "application/msword",
    "xls": "application/vnd.ms-excel",
    "ppt": "application/vnd.ms-powerpoint",
    "msg": "application/vnd.ms-outlook",
}
_OOXML_BY_EXTENSION: Final = {"docx": DOCX, "xlsx": XLSX, "pptx": PPTX}
_OOXML_PARTS: Final = ((b"word/", DOCX), (b"xl/", XLSX), (b"ppt/", PPTX))
_ODF: Final = {
    b"application/vnd.oasis.opendocument.text": ODT,
    b"application/vnd.oasis.opendocument.spreadsheet": ODS,
    b"application/vnd.oasis.opendocument.presentation": ODP,
}
_HEIC_BRANDS: Final = frozenset({b"heic", b"heix", b"heif", b"mif1", b"msf1", b"hevc"})
#: Control characters a plain-text file does not hold (tab, newlines and form feed are fine).
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_SUMMARY: Final = (
    "PDF, an image (PNG, JPEG, GIF, WebP, TIFF, HEIC), plain text, a Word, Excel, "
    "PowerPoint or OpenDocument file, RTF or an Outlook message"
)


class UnsupportedDocumentType(InputError):
    """The file is not one of the kinds of document Handover keeps."""

    http_status = 415
    slug = "unsupported-document-type"
    title = "This kind of file is not accepted"


def _extension(filename: str) -> str:
    _, dot, ext = filename.rpartition(".")
    return ext.lower() if dot else ""


def _zip_names(head: bytes) -> list[bytes]:
    """The names of the zip's local file headers found in ``head``, in order."""
    names: list[bytes] = []
    at = 0
    while True:
        at = head.find(b"PK\x03\x04", at)
        if at < 0 or at + 30 > len(head):
            return names
        length = int.from_bytes(head[at + 26 : at + 28], "little")
        names.append(head[at + 30 : at + 30 + length])
        at += 30 + length


def _zip_type(head: bytes, filename: str) -> str | None:
    names = _zip_names(head)
    if names[:1] == [b"mimetype"]:
        content = head[head.find(b"mimetype") + len(b"mimetype") :][:80]
        for declared, media in _ODF.items():
            if content.startswith(declared):
                return media
        return None
    if b"[Content_Types].xml" not in names:
        return None
    for prefix, media in _OOXML_PARTS:
        if any(n.startswith(prefix) for n in names):
            return media
    return _OOXML_BY_EXTENSION.get(_extension(filename))


def _text_type(head: bytes, complete: bool) -> str | None:
    body = head.removeprefix(codecs.BOM_UTF8)
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        text = decoder.decode(body, final=complete)
        media = TEXT_UTF8
    except UnicodeDecodeError:
        try:
            text = body.decode("cp1252")
        except UnicodeDecodeError:
            return None
        media = TEXT_1252
    return None if _CONTROL.search(text) else media


def sniff_media_type(head: bytes, filename: str = "", *, complete: bool = False) -> str:
    """The media type of a document whose first bytes are ``head`` (up to :data:`SNIFF_BYTES`;
    ``complete``: ``head`` is the whole file). :class:`UnsupportedDocumentType` if it is
    none of :data:`ALLOWED`."""
    if not head:
        raise UnsupportedDocumentType("the document is empty")
    media: str | None = None
    if head.startswith(b"%PDF-"):
        media = PDF
    elif head.startswith(b"\x89PNG\r\n\x1a\n"):
        media = "image/png"
    elif head.startswith(b"\xff\xd8\xff"):
        media = "image/jpeg"
    elif head.startswith((b"GIF87a", b"GIF89a")):
        media = "image/gif"
    elif head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        media = "image/webp"
    elif head.startswith((b"II*\x00", b"MM\x00*")):
        media = "image/tiff"
    elif head[4:8] == b"ftyp" and head[8:12] in _HEIC_BRANDS:
        media = "image/heic"
    elif head.startswith(b"{\\rtf"):
        media = "application/rtf"
    elif head.startswith(_OLE2):
        media = _OLE2_BY_EXTENSION.get(_extension(filename))
    elif head.startswith(b"PK\x03\x04"):
        media = _zip_type(head, filename)
    else:
        media = _text_type(head, complete)
    if media is None:
        raise UnsupportedDocumentType(
            "this kind of file is not accepted (Handover looks at the file's content, not at "
            f"its name or the type the upload declared): upload a {_SUMMARY}"
        )
    return media
