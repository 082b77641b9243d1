"""Commands as templates over the run's ``end_date``.

Templates are rendered once, in the sandbox, with ``END_DATE_MARKER`` where the run's
end date goes; the result is split on the marker, so a command for any run is the
segments joined by its end date.
"""

from __future__ import annotations

from legacy_parser.model import CommandTemplate

# NUL bytes cannot appear in a shell command, so the marker cannot collide with one.
END_DATE_MARKER = "\x00end_date\x00"


class CommandFormatError(Exception):
    """A command template's ``%`` formatting failed; says which template and why."""

    def __init__(self, template: str, params: dict, cause: Exception) -> None:
        if isinstance(cause, KeyError):
            reason = f"no parameter {cause.args[0]!r}; known: {', '.join(sorted(params)) or 'none'}"
        else:
            reason = str(cause)
        super().__init__(f"cannot %-format command {template!r}: {reason}")


def command_template(command: str | None) -> CommandTemplate:
    return CommandTemplate(segments=tuple((command or "").split(END_DATE_MARKER)))
