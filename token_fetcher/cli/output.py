"""Terminal output for the commands: every line has its control characters escaped.

Names and messages come from workflow definitions a command does not control; a job
named with an escape sequence must not recolour, retitle or rewrite the reader's
terminal, so control characters are shown escaped (``\\x1b``) instead.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TextIO

from legacy_parser.control_characters import escape_control_characters

__all__ = ["NO_LEGACY_RUN", "iso_time", "print_fields", "print_line", "print_table"]

NO_LEGACY_RUN = "none (the migration date is before the schedule's reference)"


def print_line(text: str = "", file: TextIO | None = None) -> None:
    print(escape_control_characters(text), file=file or sys.stdout)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    shown = [[escape_control_characters(str(cell)) for cell in row] for row in [headers, *rows]]
    widths = [max(len(cell) for cell in column) for column in zip(*shown, strict=True)]
    for row in shown:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())


def print_fields(fields: Sequence[tuple[str, str]]) -> None:
    width = max(len(label) for label, _ in fields)
    for label, value in fields:
        print(f"{label.ljust(width)}  {escape_control_characters(value)}")


def iso_time(value: datetime | int | None) -> str:
    """UTC, to the second, with a Z; "" for None."""
    if value is None:
        return ""
    moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
