"""The shared PDF layout: every page names the school, who printed it and when, page n of N."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from pypdf import PdfReader

from transfer.printing import PrintDocument, PrintedBy


def _text(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def test_every_page_carries_the_school_the_printer_and_its_number() -> None:
    doc = PrintDocument(
        "Chronology for Zoë Ōkafor-Nguyễn",
        PrintedBy("Northgate Primary", "Asha Patel (DSL)", datetime(2026, 3, 4, 9, 5, tzinfo=UTC)),
    )
    doc.heading("Concerns")
    doc.rows([("Date of birth", "4 March 2014"), ("UPN", "A123456789012")])
    doc.table(("When", "What"), [(f"{d} March", "Bruise on arm " * 20) for d in range(1, 60)])
    pdf = doc.finish()
    assert pdf.startswith(b"%PDF-")
    pages = _text(pdf)
    assert len(pages) >= 2
    for number, text in enumerate(pages, start=1):
        assert "Northgate Primary" in text
        assert "Printed by Asha Patel (DSL) on 4 March 2026 at 09:05 UTC" in text
        assert f"Page {number} of {len(pages)}" in text
    # Names outside Latin-1 print as written (the embedded font covers them).
    assert "Zoë Ōkafor-Nguyễn" in pages[0]
    assert "A123456789012" in pages[0]
    # A long table repeats its header on the next page.
    assert "When" in pages[1] and "What" in pages[1]


def test_an_empty_table_prints_nothing_and_the_title_is_the_documents_title() -> None:
    doc = PrintDocument("Governors' report", PrintedBy("Northgate", "A", datetime(2026, 1, 1)))
    doc.table(("A", "B"), [])
    pdf = doc.finish()
    reader = PdfReader(io.BytesIO(pdf))
    assert reader.metadata is not None and reader.metadata.title == "Governors' report"
    assert len(reader.pages) == 1
