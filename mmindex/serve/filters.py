"""Structured filters from a request -> one SQL predicate for `Index.search(where=...)`.

A request never carries SQL. Each filter is `column:operator:value`; the column and the
operator come from fixed lists and the value becomes a literal (a number parsed as one, or
a single-quoted string with its quotes doubled), so nothing a client sends is ever spliced
into the predicate as code."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from mmindex.errors import UserInputError

# Each operator and the SQL it becomes; docs/serve.md tabulates the same mapping beside the
# CLI's --where, and tests/serve/test_filter_mapping.py checks each row gives the same rows.
# Text compares as SQL strings do (`camera:lt:D` is `camera < 'D'`), as --where would.
_NUMBER_OPERATORS = {"eq": "=", "ne": "<>", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_TEXT_FUNCTIONS = {"contains": "contains", "prefix": "starts_with", "suffix": "ends_with"}
_TEXT_OPERATORS = {**_NUMBER_OPERATORS, **_TEXT_FUNCTIONS}

# Which metadata each target may be filtered on, and whether it holds numbers or text.
FILTER_COLUMNS: dict[str, dict[str, str]] = {
    "images": {"path": "text", "format": "text", "size": "number", "mtime_ns": "number",
               "width": "number", "height": "number", "taken": "date", "camera": "text",
               "lens": "text", "latitude": "number", "longitude": "number",
               "page": "number"},
    "texts": {"path": "text", "key": "text", "text": "text", "size": "number",
              "mtime_ns": "number"},
}

FILTER_HELP = ("column:operator:value, repeatable, all must hold. Operators on numbers "
               f"and dates (taken, as 2024-06-01 or 2024-06-01T18:30): "
               f"{', '.join(_NUMBER_OPERATORS)}; on text: {', '.join(_TEXT_OPERATORS)}. "
               "Columns: images " + ", ".join(FILTER_COLUMNS["images"]) + "; texts "
               + ", ".join(FILTER_COLUMNS["texts"]) + ". Example: width:ge:1000")


@dataclass(frozen=True)
class Filter:
    column: str
    operator: str
    value: str


def parse_filter(text: str) -> Filter:
    """`width:ge:1000` -> Filter; the value may itself hold colons (`path:prefix:C:/x`)."""
    parts = text.split(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise UserInputError(f"filter {text!r} is not column:operator:value")
    return Filter(*parts)


def compile_filters(target: str, filters: list[str]) -> str | None:
    """The AND of every filter as a DuckDB predicate, or None when there are none."""
    clauses = [_compile_one(target, parse_filter(f)) for f in filters]
    return " AND ".join(clauses) if clauses else None


def _compile_one(target: str, f: Filter) -> str:
    columns = FILTER_COLUMNS.get(target, {})
    if f.column not in columns:
        raise UserInputError(f"cannot filter {target} on {f.column!r}; "
                             f"columns: {', '.join(columns)}")
    kind = columns[f.column]
    if kind == "text":
        return _text_clause(f)
    if f.operator not in _NUMBER_OPERATORS:
        raise UserInputError(f"{f.column} is a {kind}; operators: {', '.join(_NUMBER_OPERATORS)}")
    literal = _date_literal(f) if kind == "date" else _number_literal(f)
    return f"{f.column} {_NUMBER_OPERATORS[f.operator]} {literal}"


def _date_literal(f: Filter) -> str:
    """A timestamp literal from an ISO date or date-time, re-written from the parsed value,
    so only digits, dashes, colons and a space reach the predicate."""
    try:
        when = datetime.fromisoformat(f.value)
    except ValueError:
        raise UserInputError(f"filter on {f.column}: {f.value!r} is not a date like "
                             "2024-06-01 or 2024-06-01T18:30") from None
    return f"TIMESTAMP '{when.replace(tzinfo=None).isoformat(sep=' ')}'"


def _number_literal(f: Filter) -> str:
    try:
        return str(int(f.value))
    except ValueError:
        pass
    try:
        number = float(f.value)
    except ValueError:
        raise UserInputError(f"filter on {f.column}: {f.value!r} is not a number") from None
    if not math.isfinite(number):
        raise UserInputError(f"filter on {f.column}: {f.value!r} is not a finite number")
    return repr(number)


def _text_clause(f: Filter) -> str:
    if f.operator not in _TEXT_OPERATORS:
        raise UserInputError(f"{f.column} is text; operators: {', '.join(_TEXT_OPERATORS)}")
    if "\x00" in f.value:
        raise UserInputError(f"filter on {f.column}: the value holds a NUL character")
    literal = _string_literal(f.value)
    if f.operator in _TEXT_FUNCTIONS:
        return f"{_TEXT_FUNCTIONS[f.operator]}({f.column}, {literal})"
    return f"{f.column} {_TEXT_OPERATORS[f.operator]} {literal}"


def _string_literal(value: str) -> str:
    """A quoted SQL string. `Index.filter_ids` refuses any ';' (its guard against a second
    statement in --where), so a ';' inside a value is spelled chr(59) outside the quotes."""
    pieces = ["'" + piece.replace("'", "''") + "'" for piece in value.split(";")]
    return " || chr(59) || ".join(pieces) if len(pieces) > 1 else pieces[0]
