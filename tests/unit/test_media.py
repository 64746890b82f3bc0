"""A document's kind from its first bytes, against an allow-list (issue 11, item 21)."""

from __future__ import annotations

import io
import zipfile

import pytest

from transfer.media import (
    ALLOWED,
    DOCX,
    ODT,
    PDF,
    SNIFF_BYTES,
    TEXT_1252,
    TEXT_UTF8,
    XLSX,
    UnsupportedDocumentType,
    sniff_media_type,
)


def _zip(members: list[tuple[str, bytes]], *, stored_first: bool = False) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for i, (name, data) in enumerate(members):
            kind = zipfile.ZIP_STORED if stored_first and i == 0 else zipfile.ZIP_DEFLATED
            z.writestr(name, data, compress_type=kind)
    return out.getvalue()


OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100
OOXML = [("[Content_Types].xml", b"<Types/>"), ("_rels/.rels", b"<Relationships/>")]


@pytest.mark.parametrize(
    ("head", "filename", "expected"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "anything.bin", PDF),
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "", "image/png"),
        (b"\xff\xd8\xff\xe0\0\x10JFIF", "photo.pdf", "image/jpeg"),  # the name does not decide
        (b"GIF89a\x01\0\x01\0", "", "image/gif"),
        (b"RIFF\x24\0\0\0WEBPVP8 ", "", "image/webp"),
        (b"II*\0\x08\0\0\0", "", "image/tiff"),
        (b"\0\0\0\x18ftypheic\0\0\0\0", "IMG_0001.HEIC", "image/heic"),
        (b"{\\rtf1\\ansi Hello}", "", "application/rtf"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100, "minutes.doc", "application/msword"),
        (
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100,
            "call.msg",
            "application/vnd.ms-outlook",
        ),
        ("Notes from the meeting, £5 for the trip\n".encode(), "notes.txt", TEXT_UTF8),
        ("Notes, £5\r\n".encode("cp1252"), "notes.txt", TEXT_1252),
        (b"\xef\xbb\xbfWith a byte-order mark", "", TEXT_UTF8),
    ],
)
def test_allowed_kinds_are_recognised(head: bytes, filename: str, expected: str) -> None:
    assert sniff_media_type(head, filename, complete=True) == expected
    assert expected in ALLOWED


def test_office_documents_by_their_parts_or_their_name() -> None:
    docx = _zip([*OOXML, ("word/document.xml", b"<w:document/>")])
    assert sniff_media_type(docx, "letter.bin") == DOCX
    xlsx = _zip([*OOXML, ("xl/workbook.xml", b"<workbook/>")])
    assert sniff_media_type(xlsx) == XLSX
    # The parts not in the first bytes read: an Office package, told apart by its name.
    bare = _zip(OOXML)
    assert sniff_media_type(bare, "plan.docx") == DOCX
    with pytest.raises(UnsupportedDocumentType):
        sniff_media_type(bare, "plan.zip")
    odt = _zip(
        [("mimetype", b"application/vnd.oasis.opendocument.text"), ("content.xml", b"<office/>")],
        stored_first=True,
    )
    assert sniff_media_type(odt, "plan.odt") == ODT


@pytest.mark.parametrize(
    ("head", "filename"),
    [
        (b"\x7fELF\x02\x01\x01\0", "letter.pdf"),  # a program dressed as a PDF
        (b"MZ\x90\0\x03\0\0\0", "form.docx"),  # a Windows program
        (_zip([("evil.exe", b"MZ")]), "bundle.zip"),  # any other zip
        (OLE2, "installer.msi"),
        (b"\0\x01\x02\x03binary", "data.txt"),  # not text, whatever the name
        (b"text with a NUL\0 in it", "a.txt"),
        (b"\x1b[31mterminal escapes\x1b[0m", "a.txt"),
        (b"\0\0\0\x18ftypmp42\0\0\0\0", "clip.mp4"),  # video is not kept
    ],
)
def test_other_kinds_are_refused(head: bytes, filename: str) -> None:
    with pytest.raises(UnsupportedDocumentType) as err:
        sniff_media_type(head, filename, complete=True)
    assert err.value.http_status == 415 and "not accepted" in err.value.message
    assert filename not in err.value.message  # nothing the uploader chose is echoed


def test_an_empty_file_is_refused() -> None:
    with pytest.raises(UnsupportedDocumentType, match="empty"):
        sniff_media_type(b"", "a.txt", complete=True)


def test_utf8_cut_at_the_end_of_the_window_is_still_text() -> None:
    text = ("é" * SNIFF_BYTES).encode()[: SNIFF_BYTES - 1]  # ends half-way through a letter
    assert sniff_media_type(text, "a.txt", complete=False) == TEXT_UTF8
