"""Control characters in text that definitions choose, written as visible escapes.

Workflow and job names, file names and exception messages come from definition code.
Shown raw, a newline in one ends a log line early, and an escape sequence recolours,
retitles or rewrites the reader's terminal; written as ``\\x1b``, it is harmless and
still says what was there. The parser's result caps, the server's log and the command
line all escape with this one function.
"""

from __future__ import annotations

__all__ = ["escape_control_characters"]

# C0 controls, DEL and the C1 controls (CSI is U+009B).
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}


def escape_control_characters(text: str) -> str:
    """``text`` with every C0 and C1 control character and DEL written as ``\\xNN``."""
    return text.translate(_ESCAPES)
