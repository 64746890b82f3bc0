"""Printable documents as PDF: one look for every paper the service produces.

A referral read by an agency, a subject access export, a pupil's chronology for a
child-protection conference and the governors' report all leave the building on paper.
They share one layout: the organisation's name at the top of every page, who printed it
and when, "Page n of N" at the foot, headings, label-value rows and tables. Everything is
built in memory and returned as bytes (no plaintext written to disk).

fpdf2 (pure Python) draws the pages; DejaVu Sans is embedded so any name prints, not only
Latin-1 (docs/adr/0013-pdf-with-fpdf2.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final

FONT: Final = "DejaVu"
_FONT_FILES: Final = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf"}

# Sizes in points; the page is A4 with 18 mm margins.
_BODY: Final = 10.0
_SMALL: Final = 8.0
_MARGIN_MM: Final = 18.0
_LINE_MM: Final = 5.0


@dataclass(frozen=True, slots=True)
class PrintedBy:
    """Who printed the document and when: shown on every page."""

    organisation: str
    person: str
    at: datetime


def _font_path(name: str) -> str:
    return str(resources.files("transfer.printing").joinpath("fonts", name))


def _printed_at(at: datetime) -> str:
    moment = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%d %B %Y at %H:%M UTC").lstrip("0")


class PrintDocument:
    """A PDF under construction. Methods add content top to bottom; :meth:`finish` returns it."""

    def __init__(self, title: str, printed_by: PrintedBy, *, subtitle: str = "") -> None:
        # fpdf2 is imported here: only the commands and pages that print pay for it.
        from fpdf import FPDF

        self.title = title
        self.printed_by = printed_by
        heading = f"{printed_by.organisation} · {title}"
        footer_text = f"Printed by {printed_by.person} on {_printed_at(printed_by.at)}"

        class _Pages(FPDF):
            def header(self) -> None:
                self.set_font(FONT, "", _SMALL)
                self.set_text_color(80, 80, 80)
                self.cell(0, 4, heading, new_x="LMARGIN", new_y="NEXT")
                self.ln(2)
                self.set_text_color(0, 0, 0)

            def footer(self) -> None:
                self.set_y(-14)
                self.set_font(FONT, "", _SMALL)
                self.set_text_color(80, 80, 80)
                self.cell(0, 4, footer_text, new_x="LMARGIN", new_y="NEXT")
                self.cell(0, 4, f"Page {self.page_no()} of {{nb}}", align="R")
                self.set_text_color(0, 0, 0)

        pdf = _Pages(orientation="portrait", unit="mm", format="A4")
        pdf.set_margins(_MARGIN_MM, _MARGIN_MM, _MARGIN_MM)
        pdf.set_auto_page_break(auto=True, margin=20)
        for style, name in _FONT_FILES.items():
            pdf.add_font(FONT, style, _font_path(name))
        pdf.alias_nb_pages()
        pdf.set_title(title)
        pdf.set_author(printed_by.organisation)
        pdf.set_creator("Handover")
        pdf.set_producer("Handover")
        pdf.set_lang("en-GB")
        pdf.set_creation_date(
            printed_by.at if printed_by.at.tzinfo else printed_by.at.replace(tzinfo=UTC)
        )
        pdf.add_page()
        self._pdf: Any = pdf
        pdf.set_font(FONT, "B", 16)
        pdf.multi_cell(0, 8, title, align="L", new_x="LMARGIN", new_y="NEXT")
        if subtitle:
            pdf.set_font(FONT, "", _BODY)
            pdf.multi_cell(0, _LINE_MM, subtitle, align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)

    def heading(self, text: str) -> None:
        pdf = self._pdf
        pdf.ln(2)
        pdf.set_font(FONT, "B", 12)
        pdf.multi_cell(0, 6, text, align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)

    def paragraph(self, text: str, *, bold: bool = False, small: bool = False) -> None:
        pdf = self._pdf
        pdf.set_font(FONT, "B" if bold else "", _SMALL if small else _BODY)
        pdf.multi_cell(0, _LINE_MM, text, align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)

    def rows(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Label-value rows ("Date of birth", "4 March 2014"), the label in bold."""
        self.table(
            ("", ""),
            [(label, value) for label, value in pairs],
            header=False,
            widths=(1, 2),
            bold_first=True,
        )

    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[str]],
        *,
        header: bool = True,
        widths: Sequence[int] | None = None,
        bold_first: bool = False,
    ) -> None:
        """A table; long cells wrap, and a table longer than a page repeats its header."""
        from fpdf.fonts import FontFace

        pdf = self._pdf
        pdf.set_font(FONT, "", _BODY)
        body = [list(row) for row in rows]
        if not body:
            return
        bold = FontFace(emphasis="BOLD")
        with pdf.table(
            col_widths=tuple(widths) if widths else None,
            first_row_as_headings=header,
            headings_style=bold,
            text_align="LEFT",
            line_height=_LINE_MM,
        ) as table:
            if header:
                heading_row = table.row()
                for name in columns:
                    heading_row.cell(name)
            for values in body:
                row = table.row()
                for index, value in enumerate(values):
                    row.cell(value, style=bold if bold_first and index == 0 else None)
        pdf.ln(2)

    def finish(self) -> bytes:
        return bytes(self._pdf.output())


__all__ = ["FONT", "PrintDocument", "PrintedBy"]
