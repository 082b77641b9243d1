"""Is a command Pinball printed the command served now? For verifying a migration.

Commands are byte-identical to what Pinball's code gives, with the ``k=v`` pairs of
``--job_params`` and ``--executor_config`` in the definition's order. Production Pinball
ran on CPython 2.7 and joined those pairs in 2.7's dict order, which even alternated
between runs; so a Pinball command and a served one are *equal*, *equal up to the order
of pairs* (the same pairs, and byte-identical everywhere else), or *different*.

Pairs are split at commas, as the job runner reads them.
"""

from __future__ import annotations

import collections
import difflib
import enum
import re
from dataclasses import dataclass

PAIR_OPTIONS = ("--job_params", "--executor_config")
_PAIR_OPTION = re.compile(r'(--job_params|--executor_config)="([^"]*)"')
_BLANK = "\x00pairs\x00"  # cannot appear in a command line
_BLANKED = re.compile(f"^({'|'.join(PAIR_OPTIONS)})={_BLANK}$")
# /workflow/<workflow>/<instance>/job/<state>/<job>, as in Pinball's token names.
_TOKEN_NAME = re.compile(r"^/workflow/([^/\s]+)/(\d+)/job/[^/\s]+/([^/\s]+)\s+(.*)$")


class Verdict(enum.Enum):
    EQUAL = "equal"
    EQUAL_UP_TO_ORDER = "equal up to the order of pairs"
    DIFFERENT = "different"


@dataclass(frozen=True)
class Comparison:
    verdict: Verdict
    # What differs, one line each (empty unless DIFFERENT).
    differences: tuple[str, ...] = ()


def compare_commands(pinball: str, served: str) -> Comparison:
    """Compare a command Pinball printed with the one served for the same job and run."""
    if pinball == served:
        return Comparison(Verdict.EQUAL)
    pinball_rest, pinball_pairs = _split_pairs(pinball)
    served_rest, served_pairs = _split_pairs(served)
    differences = []
    for option in PAIR_OPTIONS:
        differences += _pair_differences(option, pinball_pairs.get(option),
                                         served_pairs.get(option))
    if pinball_rest != served_rest:
        differences += _text_differences(pinball_rest, served_rest)
        if not differences:  # the pair options moved
            differences.append(f"the commands differ: {pinball!r} vs {served!r}")
    if differences:
        return Comparison(Verdict.DIFFERENT, tuple(differences))
    return Comparison(Verdict.EQUAL_UP_TO_ORDER)


def _split_pairs(command: str) -> tuple[str, dict[str, list[str]]]:
    """The command with each pair option's value blanked, and the values' pairs."""
    pairs: dict[str, list[str]] = {}

    def blank(match: re.Match) -> str:
        pairs.setdefault(match.group(1), []).extend(match.group(2).split(","))
        return f"{match.group(1)}={_BLANK}"

    return _PAIR_OPTION.sub(blank, command), pairs


def _pair_differences(option: str, pinball: list[str] | None,
                      served: list[str] | None) -> list[str]:
    if pinball is None and served is None:
        return []
    if pinball is None or served is None:
        where = "Pinball's" if pinball is None else "the served"
        return [f"{option}: missing from {where} command"]
    missing = collections.Counter(pinball) - collections.Counter(served)
    extra = collections.Counter(served) - collections.Counter(pinball)
    served_values = _by_key(extra.elements())
    differences = []
    for pair in sorted(missing.elements()):
        key, _, value = pair.partition("=")
        if key in served_values:
            differences.append(f"{option}: {key} is {value!r} in Pinball's command, "
                               f"{served_values[key].pop(0)!r} in the served one")
            if not served_values[key]:
                del served_values[key]
        else:
            differences.append(f"{option}: {pair!r} only in Pinball's command")
    for key, values in sorted(served_values.items()):
        differences += [f"{option}: {key}={value!r} only in the served command"
                        for value in values]
    return differences


def _by_key(pairs) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for pair in sorted(pairs):
        key, _, value = pair.partition("=")
        found.setdefault(key, []).append(value)
    return found


def _text_differences(pinball: str, served: str) -> list[str]:
    """Word-level differences outside the pair options (a pair option only one command
    has is told by _pair_differences)."""
    old, new = pinball.split(" "), served.split(" ")
    differences = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or all(_BLANKED.match(word) for word in old[i1:i2] + new[j1:j2]):
            continue
        was, now = " ".join(old[i1:i2]), " ".join(new[j1:j2])
        if tag == "replace":
            differences.append(f"Pinball's command has {was!r} where the served one has {now!r}")
        elif tag == "delete":
            differences.append(f"{was!r} only in Pinball's command")
        else:
            differences.append(f"{now!r} only in the served command")
    return differences


@dataclass(frozen=True)
class LoggedCommand:
    """One command from a Pinball log or token dump, and the job and run it is for."""

    workflow: str
    job: str
    command: str
    run_time: str = ""  # ISO 8601, as logged
    instance_ms: int = 0  # Pinball's run id (instantiation time), from a token name


def parse_log_line(line: str) -> LoggedCommand | None:
    """A line of a verification file; None for blank and ``#`` comment lines.

    Two forms: ``workflow<TAB>job<TAB>run time<TAB>command``, or a token dump's
    ``/workflow/<workflow>/<instance>/job/<state>/<job>`` then white space and the command.
    Raises ValueError for any other line.
    """
    text = line.rstrip("\r\n")
    if not text.strip() or text.lstrip().startswith("#"):
        return None
    token = _TOKEN_NAME.match(text)
    if token:
        return LoggedCommand(token.group(1), token.group(3), token.group(4),
                             instance_ms=int(token.group(2)))
    fields = text.split("\t", 3)
    if len(fields) == 4 and all(fields[:3]):
        return LoggedCommand(fields[0], fields[1], fields[3], run_time=fields[2])
    raise ValueError("expected workflow<TAB>job<TAB>run time<TAB>command, or a job token "
                     "name /workflow/<workflow>/<instance>/job/<state>/<job> and the command")
