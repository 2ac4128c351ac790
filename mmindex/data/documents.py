"""Documents with exact fields: invoices, forms and account statements drawn to PDF by fpdf2
(a real text layer, 1-3 pages) and rendered page by page to PNG by pypdfium2, so each page
image is exactly the PDF's page.

Every value that a question asks or a query names is a stored field, written once as one
string on one page, whose number is stored too (tests check that the page's text layer holds
it exactly). Documents come in groups of one to three from the same company, template and
customer, differing in numbers, dates and amounts: near duplicates that only the numbers
tell apart ("the invoice from ACME for 1,250.00"), as in a real archive.

Layouts vary by template (three invoice layouts, two forms, one statement), font family
(Helvetica, Times, Courier), font size, margins, header colour and the date format; long
invoices and statements run onto a second or third page.

`make-documents OUT` writes:

- pdf/<name>.pdf        the documents
- images/<name>_p<N>.png the pages at --dpi, N from 1
- documents.parquet     one row per document: pdf, kind, template, pages, company, number,
                        date, total, fields (JSON of every field, line items included)
- pages.parquet         one row per page: pdf, page, image, text (what the page says, line
                        by line, as written)
- queries.parquet       retrieval: query, pdf, page, image, kind (what the query names)
- questions.parquet     field questions: image, question, answer, kind (the field), pdf, page
- text/pages.jsonl      the page texts as a text corpus (row i is pages.parquet's row i), for
                        measuring the text layer on an index without PDF ingest
- documents.json        generator, version, seed, dpi, counts
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmindex.core.progress import Progress, no_progress
from mmindex.data.splits import prepare_out_dir, write_table
from mmindex.errors import UserInputError

DOCUMENT_KINDS = ("invoice", "form", "statement")
TEMPLATES = {"invoice": ("classic", "banded", "compact"), "form": ("boxed", "lined"),
             "statement": ("ledger",)}
FONTS = ("Helvetica", "Times", "Courier")
DATE_FORMATS = ("%Y-%m-%d", "%d %b %Y", "%m/%d/%Y", "%d.%m.%Y")
DEFAULT_DPI = 100  # A4 at 827 x 1169 px: 9-11 pt text stays legible
MAX_PAGES = 3
CREATED = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)  # fixed: the same seed, same bytes
META_NAME = "documents.json"
TABLES = ("documents.parquet", "pages.parquet", "queries.parquet", "questions.parquet")
TEXT_CORPUS = "text/pages.jsonl"  # the page texts as a corpus, row i = pages.parquet row i

_FIRST = ("Anna", "Ben", "Carla", "David", "Elena", "Felix", "Greta", "Hugo", "Ines", "Jonas",
          "Karin", "Luis", "Maria", "Nils", "Olga", "Paul", "Rosa", "Stefan", "Tara", "Victor")
_LAST = ("Adler", "Brandt", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia", "Horvat",
         "Ivanova", "Jensen", "Kowalski", "Larsen", "Moreau", "Novak", "Okafor", "Petrov",
         "Quinn", "Rossi", "Schmidt", "Tanaka", "Urban", "Varga", "Weber", "Young", "Zimmer")
_COMPANY_STEMS = ("Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Cyberdyne",
                  "Soylent", "Hooli", "Vandelay", "Tyrell", "Wonka", "Oscorp", "Gringotts",
                  "Monarch", "Nakatomi", "Duff", "Pied Piper", "Aperture", "Black Mesa")
_COMPANY_KINDS = ("Corp.", "Ltd", "GmbH", "& Sons", "Logistics", "Supplies", "Consulting",
                  "Textiles", "Analytics", "Foods")
_STREETS = ("Harbour Road", "Linden Street", "Mill Lane", "Station Avenue", "Kings Way",
            "Elm Court", "Market Square", "River Walk", "Bridge Street", "Oak Terrace")
_CITIES = (("Bristol", "BS1 4DJ"), ("Leeds", "LS2 7EY"), ("Hamburg", "20095"),
           ("Lyon", "69002"), ("Utrecht", "3511 AB"), ("Porto", "4050-123"),
           ("Graz", "8010"), ("Aarhus", "8000"), ("Ghent", "9000"), ("Turin", "10121"))
_ITEMS = ("Consulting hours", "Server rental", "Office chairs", "Printer toner",
          "Software licence", "Delivery charge", "Maintenance visit", "Training session",
          "Cloud storage", "Cable set", "Desk lamps", "Translation service", "Paper (A4)",
          "Network switch", "Annual support", "Design work", "Travel costs", "Coffee beans")
_FORM_TITLES = ("Membership application", "Change of address", "Employee onboarding form",
                "Library card request", "Parking permit application")
_CURRENCIES = ("EUR", "GBP", "USD", "CHF")
_HEADER_COLOURS = ((31, 78, 121), (120, 30, 40), (30, 100, 60), (70, 70, 70), (150, 90, 20))


@dataclass
class Page:
    lines: list[str] = field(default_factory=list)  # what the page says, as written


@dataclass
class Written:
    """A document as drawn: its fields, the page each field is on, and each page's text."""

    kind: str
    template: str
    fields: dict  # name -> str (or a list of dicts for line items / transactions)
    field_pages: dict  # name -> 1-based page
    pages: list[Page]
    pdf_bytes: bytes


# ---------------------------------------------------------------- sampling


def _pick(options, rng: np.random.Generator):
    return options[int(rng.integers(len(options)))]


def money(cents: int) -> str:
    """12345 -> '123.45'; 125000 -> '1,250.00'."""
    return f"{cents // 100:,}.{cents % 100:02d}"


def _company(rng) -> str:
    return f"{_pick(_COMPANY_STEMS, rng)} {_pick(_COMPANY_KINDS, rng)}"


def _person(rng) -> tuple[str, str]:
    return _pick(_FIRST, rng), _pick(_LAST, rng)


def _address(rng) -> tuple[str, str]:
    city, postcode = _pick(_CITIES, rng)
    return f"{int(rng.integers(1, 200))} {_pick(_STREETS, rng)}", f"{postcode} {city}"


def _date(rng, year_from: int = 2021) -> dt.date:
    return dt.date(year_from, 1, 1) + dt.timedelta(days=int(rng.integers(0, 4 * 365)))


@dataclass(frozen=True)
class Style:
    font: str
    size: float
    margin: float
    colour: tuple[int, int, int]
    date_format: str


def _style(rng) -> Style:
    return Style(_pick(FONTS, rng), float(rng.choice([9.0, 10.0, 11.0])),
                 float(rng.choice([12.0, 16.0, 20.0])), _pick(_HEADER_COLOURS, rng),
                 _pick(DATE_FORMATS, rng))


@dataclass(frozen=True)
class Group:
    """What the documents of a near-duplicate group share."""

    kind: str
    template: str
    style: Style
    company: str
    company_address: tuple[str, str]
    customer: tuple[str, str]
    customer_address: tuple[str, str]
    currency: str


def sample_group(rng) -> Group:
    kind = _pick(DOCUMENT_KINDS, rng)
    return Group(kind, _pick(TEMPLATES[kind], rng), _style(rng), _company(rng), _address(rng),
                 _person(rng), _address(rng), _pick(_CURRENCIES, rng))


def invoice_fields(group: Group, rng) -> dict:
    count = int(rng.integers(2, 61))  # up to 60 lines: a long invoice runs onto more pages
    items = []
    for description in rng.choice(_ITEMS, size=count):
        quantity = int(rng.integers(1, 20))
        unit = int(rng.integers(5, 2000)) * 100 + int(rng.choice([0, 0, 50, 99, 25]))
        items.append({"description": str(description), "quantity": str(quantity),
                      "unit_price": money(unit), "amount": money(quantity * unit),
                      "cents": quantity * unit})
    subtotal = sum(i.pop("cents") for i in items)
    rate = int(_pick((0, 7, 10, 19, 20), rng))
    tax = round(subtotal * rate / 100)
    issued = _date(rng)
    return {"company": group.company, "company_street": group.company_address[0],
            "company_city": group.company_address[1],
            "customer": " ".join(group.customer), "customer_street": group.customer_address[0],
            "customer_city": group.customer_address[1],
            "number": f"INV-{issued.year}-{int(rng.integers(1, 10_000)):04d}",
            "date": issued.strftime(group.style.date_format),
            "due_date": (issued + dt.timedelta(days=int(_pick((14, 30, 60), rng)))
                         ).strftime(group.style.date_format),
            "items": items, "subtotal": money(subtotal), "tax_rate": f"{rate}%",
            "tax": money(tax), "total": money(subtotal + tax), "currency": group.currency}


def form_fields(group: Group, rng) -> dict:
    first, last = _person(rng) if rng.random() < 0.5 else group.customer
    street, city = _address(rng)
    born = dt.date(1950, 1, 1) + dt.timedelta(days=int(rng.integers(0, 50 * 365)))
    return {"company": group.company, "title": _pick(_FORM_TITLES, rng),
            "number": f"F-{int(rng.integers(10_000, 100_000))}", "first_name": first,
            "last_name": last, "date_of_birth": born.strftime(group.style.date_format),
            "street": street, "city": city,
            "email": f"{first.lower()}.{last.lower()}{int(rng.integers(1, 100))}@example.org",
            "phone": f"+44 {int(rng.integers(1000, 9999))} {int(rng.integers(100000, 999999))}",
            "date": _date(rng).strftime(group.style.date_format)}


def statement_fields(group: Group, rng) -> dict:
    start = _date(rng).replace(day=1)
    balance = int(rng.integers(0, 5_000_000))
    opening = balance
    rows = []
    for day in sorted(rng.choice(np.arange(1, 29), size=int(rng.integers(4, 90)))):
        cents = int(rng.integers(-300_000, 300_000))
        balance += cents
        rows.append({"date": start.replace(day=int(day)).strftime(group.style.date_format),
                     "description": str(_pick(_ITEMS, rng)),
                     "amount": ("-" if cents < 0 else "") + money(abs(cents))})
    return {"company": group.company, "customer": " ".join(group.customer),
            "customer_street": group.customer_address[0],
            "customer_city": group.customer_address[1],
            "number": f"{int(rng.integers(10, 99))}-{int(rng.integers(1000, 9999))}-"
                      f"{int(rng.integers(1000, 9999))}",
            "period": start.strftime("%B %Y"), "date": start.strftime(group.style.date_format),
            "opening_balance": _signed_money(opening), "transactions": rows,
            "closing_balance": _signed_money(balance),
            "currency": group.currency}


SAMPLERS = {"invoice": invoice_fields, "form": form_fields, "statement": statement_fields}


# ---------------------------------------------------------------- drawing


class _Writer:
    """fpdf2 with the page texts and field pages recorded as they are written."""

    def __init__(self, style: Style):
        from fpdf import FPDF

        self.style = style
        self.pdf = FPDF(format="A4", unit="mm")
        self.pdf.set_creation_date(CREATED)
        self.pdf.set_margins(style.margin, style.margin, style.margin)
        self.pdf.set_auto_page_break(False)
        self.pages: list[Page] = []
        self.field_pages: dict[str, int] = {}
        self.new_page()

    def new_page(self) -> None:
        self.pdf.add_page()
        self.pages.append(Page())
        self.font()

    def font(self, scale: float = 1.0, bold: bool = False) -> None:
        self.pdf.set_font(self.style.font, "B" if bold else "", self.style.size * scale)

    def line(self, text: str, *, width: float = 0, height: float | None = None,
             align: str = "L", fields: tuple[str, ...] = (), new_line: bool = True,
             border: int = 0, fill: bool = False) -> None:
        """One cell of text; `fields` are the field names whose values it holds."""
        height = height or self.style.size * 0.5
        self.pdf.cell(width, height, text, border=border, align=align, fill=fill,
                      new_x="LMARGIN" if new_line else "RIGHT",
                      new_y="NEXT" if new_line else "TOP")
        self.pages[-1].lines.append(text)
        for name in fields:
            self.field_pages.setdefault(name, len(self.pages))

    def room_for(self, height: float) -> bool:
        return self.pdf.get_y() + height < self.pdf.h - self.style.margin - 10

    def band(self, text: str) -> None:
        """A coloured title band with white text."""
        self.pdf.set_fill_color(*self.style.colour)
        self.pdf.set_text_color(255, 255, 255)
        self.font(1.6, bold=True)
        self.line(text, height=self.style.size * 0.9, fill=True)
        self.pdf.set_text_color(0, 0, 0)
        self.font()

    def output(self) -> bytes:
        return bytes(self.pdf.output())


def _party(w: _Writer, label: str, names: list[tuple[str, str]], fields: dict) -> None:
    w.font(bold=True)
    w.line(label)
    w.font()
    for name, key in names:
        w.line(fields[key] if name == "" else f"{name}{fields[key]}", fields=(key,))


def draw_invoice(template: str, style: Style, f: dict, rng) -> _Writer:
    w = _Writer(style)
    seller = [("", "company"), ("", "company_street"), ("", "company_city")]
    buyer = [("", "customer"), ("", "customer_street"), ("", "customer_city")]
    heading = [("Invoice no. ", "number"), ("Date: ", "date"), ("Due: ", "due_date")]
    if template == "banded":
        w.band(f"INVOICE  {f['company']}")
        w.field_pages.setdefault("company", 1)
        _party(w, "From", seller, f)
        w.pdf.ln(2)
        _party(w, "Bill to", buyer, f)
        w.pdf.ln(3)
        _party(w, "Details", heading, f)
    elif template == "classic":
        w.font(1.8, bold=True)
        w.line(f["company"], fields=("company",))
        w.font()
        w.line(f["company_street"], fields=("company_street",))
        w.line(f["company_city"], fields=("company_city",))
        w.pdf.ln(4)
        w.font(1.4, bold=True)
        w.line("Invoice", align="R")
        w.font()
        for name, key in heading:
            w.line(f"{name}{f[key]}", align="R", fields=(key,))
        _party(w, "Customer", buyer, f)
    else:  # compact: everything in two columns of one header block
        half = (w.pdf.w - 2 * style.margin) / 2
        rows = [(f["company"], f"Invoice {f['number']}", ("company",), ("number",)),
                (f["company_street"], f"Issued {f['date']}", ("company_street",), ("date",)),
                (f["company_city"], f"Payable by {f['due_date']}", ("company_city",),
                 ("due_date",))]
        for left, right, left_fields, right_fields in rows:
            w.line(left, width=half, new_line=False, fields=left_fields)
            w.line(right, width=half, align="R", fields=right_fields)
        w.pdf.ln(3)
        _party(w, "To", buyer, f)
    w.pdf.ln(5)
    _items_table(w, f, bordered=template != "compact")
    _totals(w, f, boxed=template == "banded")
    if rng.random() < 0.25 and len(w.pages) < MAX_PAGES:
        w.new_page()
        w.font(1.2, bold=True)
        w.line("Terms and conditions")
        w.font()
        for sentence in ("Payment is due by the date above.",
                         "Late payments carry interest of 1% a month.",
                         f"Please quote {f['number']} with your payment."):
            w.line(sentence)
    return w


def _items_table(w: _Writer, f: dict, bordered: bool) -> None:
    usable = w.pdf.w - 2 * w.style.margin
    widths = (usable * 0.46, usable * 0.12, usable * 0.2, usable * 0.22)
    header = ("Description", "Qty", "Unit price", "Amount")

    def draw_header() -> None:
        w.font(bold=True)
        for text, width, last in zip(header, widths, (False, False, False, True)):
            w.line(text, width=width, new_line=last, border=1 if bordered else 0,
                   align="L" if text == "Description" else "R")
        w.font()

    draw_header()
    for item in f["items"]:
        if not w.room_for(w.style.size * 0.5 * 6) and len(w.pages) < MAX_PAGES:
            w.new_page()
            w.line("(continued)")
            draw_header()
        cells = (item["description"], item["quantity"], item["unit_price"], item["amount"])
        for text, width, last in zip(cells, widths, (False, False, False, True)):
            w.line(text, width=width, new_line=last, border=1 if bordered else 0,
                   align="L" if width == widths[0] else "R")


def _totals(w: _Writer, f: dict, boxed: bool) -> None:
    usable = w.pdf.w - 2 * w.style.margin
    w.pdf.ln(2)
    for label, key, bold in (("Subtotal", "subtotal", False),
                             (f"Tax ({f['tax_rate']})", "tax", False),
                             (f"Total ({f['currency']})", "total", True)):
        w.font(bold=bold)
        w.line(label, width=usable * 0.78, align="R", new_line=False)
        w.line(f[key], width=usable * 0.22, align="R", border=1 if boxed and bold else 0,
               fields=(key, "tax_rate", "currency") if key == "tax" else (key,))
    w.field_pages.setdefault("currency", len(w.pages))
    w.font()


def draw_form(template: str, style: Style, f: dict, rng) -> _Writer:
    w = _Writer(style)
    w.font(1.1, bold=True)
    w.line(f["company"], fields=("company",))
    w.band(f["title"])
    w.field_pages.setdefault("title", 1)
    w.line(f"Reference: {f['number']}", fields=("number",))
    w.pdf.ln(4)
    labels = (("First name", "first_name"), ("Last name", "last_name"),
              ("Date of birth", "date_of_birth"), ("Street", "street"), ("Town", "city"),
              ("E-mail", "email"), ("Telephone", "phone"))
    usable = w.pdf.w - 2 * style.margin
    for label, key in labels:
        if template == "boxed":
            w.line(label, width=usable * 0.3, new_line=False, border=1)
            w.line(f[key], width=usable * 0.7, border=1, fields=(key,))
        else:
            w.line(f"{label}: {f[key]}", fields=(key,))
            w.pdf.line(style.margin, w.pdf.get_y(), w.pdf.w - style.margin, w.pdf.get_y())
        w.pdf.ln(1.5)
    w.pdf.ln(6)
    w.line(f"Signed on {f['date']}", fields=("date",))
    return w


def draw_statement(template: str, style: Style, f: dict, rng) -> _Writer:
    w = _Writer(style)
    w.band(f"{f['company']}  Account statement")
    w.field_pages.setdefault("company", 1)
    w.line(f"Account holder: {f['customer']}", fields=("customer",))
    w.line(f["customer_street"], fields=("customer_street",))
    w.line(f["customer_city"], fields=("customer_city",))
    w.line(f"Account number: {f['number']}", fields=("number",))
    w.line(f"Period: {f['period']}", fields=("period",))
    w.line(f"Statement date: {f['date']}", fields=("date",))
    w.line(f"Opening balance ({f['currency']}): {f['opening_balance']}",
           fields=("opening_balance", "currency"))
    w.pdf.ln(4)
    usable = w.pdf.w - 2 * style.margin
    widths = (usable * 0.25, usable * 0.5, usable * 0.25)
    for row in f["transactions"]:
        if not w.room_for(style.size * 0.5 * 4) and len(w.pages) < MAX_PAGES:
            w.new_page()
            w.line(f"Account number: {f['number']} (continued)")
        cells = (row["date"], row["description"], row["amount"])
        for text, width, last in zip(cells, widths, (False, False, True)):
            w.line(text, width=width, new_line=last, border="B",
                   align="R" if last else "L")
    w.pdf.ln(3)
    w.font(bold=True)
    w.line(f"Closing balance ({f['currency']}): {f['closing_balance']}",
           fields=("closing_balance",))
    w.font()
    return w


DRAWERS = {"invoice": draw_invoice, "form": draw_form, "statement": draw_statement}


def write_document(group: Group, rng) -> Written:
    fields = SAMPLERS[group.kind](group, rng)
    writer = _fitted(group, fields, rng)
    return Written(group.kind, group.template, fields, writer.field_pages, writer.pages,
                   writer.output())


def _fitted(group: Group, fields: dict, rng) -> _Writer:
    """Draw; where the rows do not fit MAX_PAGES, drop rows from the end (recomputing an
    invoice's totals) and draw again, so every stored row is on a page."""
    rows_key = {"invoice": "items", "statement": "transactions"}.get(group.kind)
    state = rng.bit_generator.state
    while True:
        rng.bit_generator.state = state  # the same draws for the optional terms page
        writer = DRAWERS[group.kind](group.template, group.style, fields, rng)
        if rows_key is None or writer.pdf.get_y() < writer.pdf.h - group.style.margin - 8:
            return writer
        fields[rows_key] = fields[rows_key][:-1]
        if group.kind == "invoice":
            _retotal(fields)
        else:
            _rebalance(fields)


def _cents(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    return sign * int(text.lstrip("-").replace(",", "").replace(".", ""))


def _signed_money(cents: int) -> str:
    return money(cents) if cents >= 0 else "-" + money(-cents)


def _retotal(f: dict) -> None:
    subtotal = sum(_cents(i["amount"]) for i in f["items"])
    tax = round(subtotal * int(f["tax_rate"].rstrip("%")) / 100)
    f |= {"subtotal": money(subtotal), "tax": money(tax), "total": money(subtotal + tax)}


def _rebalance(f: dict) -> None:
    closing = _cents(f["opening_balance"]) + sum(_cents(t["amount"]) for t in f["transactions"])
    f["closing_balance"] = _signed_money(closing)


# ---------------------------------------------------------------- questions and queries

# (kind, question, field) per document kind: the answer is the field's value, as printed
FIELD_QUESTIONS = {
    "invoice": (("total", "What is the total?", "total"),
                ("number", "What is the invoice number?", "number"),
                ("date", "What is the invoice date?", "date"),
                ("customer", "Who is the invoice addressed to?", "customer"),
                ("company", "Which company issued the invoice?", "company")),
    "form": (("last_name", "What is the applicant's last name?", "last_name"),
             ("date_of_birth", "What is the date of birth on the form?", "date_of_birth"),
             ("number", "What is the form's reference number?", "number")),
    "statement": (("closing_balance", "What is the closing balance?", "closing_balance"),
                  ("number", "What is the account number?", "number")),
}


def retrieval_queries(doc: Written) -> list[tuple[str, str, int]]:
    """(query, kind, target page): what a person would type to find the document, each
    naming something only it (among its near duplicates) has."""
    f, at = doc.fields, doc.field_pages
    if doc.kind == "invoice":
        return [(f"the invoice from {f['company']} for {f['total']}", "company_amount",
                 at["total"]),
                (f"invoice {f['number']}", "number", at["number"]),
                (f"invoice to {f['customer']} dated {f['date']}", "customer_date", at["date"])]
    if doc.kind == "form":
        named = f"{f['title']} of {f['first_name']} {f['last_name']} born {f['date_of_birth']}"
        return [(named, "name_date", at["date_of_birth"]),
                (f"form {f['number']}", "number", at["number"])]
    return [(f"the {f['company']} statement with closing balance {f['closing_balance']}",
             "company_amount", at["closing_balance"]),
            (f"account {f['number']} statement for {f['period']}", "number", at["period"])]


def field_questions(doc: Written) -> list[tuple[str, str, str, int]]:
    """(question, answer, kind, page of the answer)."""
    return [(question, doc.fields[name], kind, doc.field_pages[name])
            for kind, question, name in FIELD_QUESTIONS[doc.kind]]


# ---------------------------------------------------------------- a whole split


@dataclass(frozen=True)
class DocumentsSummary:
    out_dir: Path
    n_documents: int
    n_pages: int
    documents_by_kind: dict[str, int]
    n_queries: int
    n_questions: int


def document_name(seed: int, index: int) -> str:
    return f"d{seed}_{index:05d}"


def generate(seed: int, count: int):
    """(name, Written) for `count` documents, in near-duplicate groups of one to three."""
    index = group_number = 0
    while index < count:
        rng = np.random.default_rng([seed, group_number, 24])  # 24: not another domain's
        group = sample_group(rng)
        for _ in range(min(int(rng.integers(1, 4)), count - index)):
            yield document_name(seed, index), write_document(group, rng)
            index += 1
        group_number += 1


def render_pages(pdf_bytes: bytes, dpi: int):
    """Each page of the PDF as a PIL image at `dpi`, rendered by pdfium."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(pdf_bytes)
    try:
        for page in document:
            yield page.render(scale=dpi / 72).to_pil().convert("RGB")
            page.close()
    finally:
        document.close()


def page_image_name(name: str, page: int) -> str:
    return f"images/{name}_p{page}.png"


def require_document_libraries() -> None:
    import importlib.util

    missing = [n for n in ("fpdf", "pypdfium2") if importlib.util.find_spec(n) is None]
    if missing:
        raise UserInputError(f"make-documents needs {' and '.join(missing)}: "
                             "pip install 'mmindex[documents]'")


def write_documents(out_dir: str | Path, count: int, seed: int = 0, dpi: int = DEFAULT_DPI,
                    overwrite: bool = False, progress: Progress = no_progress
                    ) -> DocumentsSummary:
    """`count` documents with their page images and tables (see the module's docstring)."""
    if count < 1 or seed < 0 or not 36 <= dpi <= 300:
        raise UserInputError(f"make-documents needs --count >= 1, --seed >= 0 and --dpi in "
                             f"36..300 (got {count}, {seed}, {dpi})")
    require_document_libraries()
    out = _prepared(Path(out_dir), overwrite)
    tables: dict[str, list[tuple]] = {t: [] for t in TABLES}
    for done, (name, doc) in enumerate(generate(seed, count), start=1):
        _write_one(out, name, doc, dpi, tables)
        progress("documents", done, count)
    _write_tables(out, tables)
    kinds = Counter(row[1] for row in tables["documents.parquet"])
    summary = DocumentsSummary(out, count, len(tables["pages.parquet"]),
                               {k: kinds[k] for k in DOCUMENT_KINDS},
                               len(tables["queries.parquet"]), len(tables["questions.parquet"]))
    meta = {"generator": "mmindex.data.documents", "version": 1, "seed": seed, "dpi": dpi,
            "n_documents": count, "n_pages": summary.n_pages,
            "documents_by_kind": summary.documents_by_kind}
    (out / META_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    return summary


def _prepared(out: Path, overwrite: bool) -> Path:
    import shutil

    if overwrite and (out / META_NAME).exists():
        shutil.rmtree(out / "pdf", ignore_errors=True)
        shutil.rmtree(out / "text", ignore_errors=True)
        for name in TABLES:
            (out / name).unlink(missing_ok=True)
    out = prepare_out_dir(out, overwrite, META_NAME)
    (out / "pdf").mkdir()
    (out / "text").mkdir()
    return out


def _write_one(out: Path, name: str, doc: Written, dpi: int, tables: dict) -> None:
    pdf = f"pdf/{name}.pdf"
    (out / pdf).write_bytes(doc.pdf_bytes)
    images = []
    for number, image in enumerate(render_pages(doc.pdf_bytes, dpi), start=1):
        images.append(page_image_name(name, number))
        image.save(out / images[-1], compress_level=6)
        tables["pages.parquet"].append((pdf, str(number), images[-1],
                                        "\n".join(doc.pages[number - 1].lines)))
    f = doc.fields
    tables["documents.parquet"].append((pdf, doc.kind, doc.template, str(len(images)),
                                        f["company"], f["number"], f["date"],
                                        f.get("total") or f.get("closing_balance") or "",
                                        json.dumps(f | {"pages": doc.field_pages})))
    for query, kind, page in retrieval_queries(doc):
        tables["queries.parquet"].append((query, pdf, str(page), images[page - 1], kind))
    for question, answer, kind, page in field_questions(doc):
        tables["questions.parquet"].append((images[page - 1], question, answer, kind, pdf,
                                            str(page)))


COLUMNS = {
    "documents.parquet": ("pdf", "kind", "template", "pages", "company", "number", "date",
                          "total", "fields"),
    "pages.parquet": ("pdf", "page", "image", "text"),
    "queries.parquet": ("query", "pdf", "page", "image", "kind"),
    "questions.parquet": ("image", "question", "answer", "kind", "pdf", "page"),
}


def _write_tables(out: Path, tables: dict) -> None:
    for name, rows in tables.items():
        write_table(out / name, COLUMNS[name], rows)
    with (out / TEXT_CORPUS).open("w", encoding="utf-8") as corpus:
        for pdf, page, _, text in tables["pages.parquet"]:
            corpus.write(json.dumps({"text": text, "pdf": pdf, "page": page}) + "\n")
