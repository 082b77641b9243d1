"""Measurements behind ANALYSIS.md's "Scale" section, each a fix tried in this process.

    python -m benchmarks.scale_probes line-of CORPUS   # parse_here, _line_of as is / by identity
    python -m benchmarks.scale_probes json CORPUS      # the result's JSON round trip

``line-of`` parses a Python corpus twice in fresh interpreters (one per variant) and
prints the time and a digest of the whole result, which must be the same. ``json``
times the worker's ``json.dump`` against ``json.dumps`` (asserting the same text) and
the server's ``json.loads`` with the cyclic garbage collector on and off.
"""

from __future__ import annotations

import bisect
import gc
import hashlib
import io
import json
import subprocess
import sys
import time

import yaml

from legacy_parser.cluster import parse_here
from legacy_parser.model import ParseResult, to_plain


def _parse(repo: str) -> ParseResult:
    with open(f"{repo}/pinball.yaml") as handle:
        setup = yaml.safe_load(handle)
    return parse_here("bench", repo, setup["parser"], setup.get("parser_params") or {},
                      setup.get("default_email") or "")


def _line_of_by_identity():
    """compat._line_of with its table keyed by id(code), so no code object is hashed."""
    tables: dict[int, tuple] = {}

    def line_of(frame):
        code = frame.f_code
        entry = tables.get(id(code))
        if entry is None or entry[0] is not code:  # the entry keeps code alive: no id reuse
            starts, lines = [], []
            for start, _end, line in code.co_lines():
                starts.append(start)
                lines.append(line)
            entry = tables[id(code)] = (code, starts, lines)
        index = bisect.bisect_right(entry[1], frame.f_lasti) - 1
        line = entry[2][index] if index >= 0 else None
        return line if line is not None else frame.f_lineno

    return line_of


def line_of_variant(repo: str, variant: str) -> None:
    import legacy_parser.compat as compat

    if variant == "by-identity":
        compat._line_of = _line_of_by_identity()
    started = time.perf_counter()
    result = _parse(repo)
    elapsed = time.perf_counter() - started
    plain = to_plain(result)
    plain.pop("duration_seconds", None)
    digest = hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()
    print(f"{variant}: parse_here {elapsed:.2f} s, {len(result.workflows)} workflows, "
          f"result {digest[:16]}")


def json_round_trip(repo: str) -> None:
    plain = {"result": to_plain(_parse(repo))}

    def cpu(label, action):
        started = time.process_time()
        value = action()
        print(f"{label}: {time.process_time() - started:.2f} s CPU")
        return value

    stream = io.StringIO()
    cpu("json.dump to a stream (the worker)", lambda: json.dump(plain, stream))
    text = cpu("json.dumps", lambda: json.dumps(plain))
    assert text == stream.getvalue()
    print(f"{len(text) / 2**20:.0f} MB")
    cpu("json.loads, garbage collector on (the server)", lambda: json.loads(text))
    gc.disable()
    cpu("json.loads, garbage collector off", lambda: json.loads(text))
    gc.enable()


def main() -> None:
    command, repo = sys.argv[1], sys.argv[2]
    if command == "line-of":
        for variant in ("as-is", "by-identity"):
            subprocess.run([sys.executable, "-m", "benchmarks.scale_probes", "_line-of",
                            repo, variant], check=True)
    elif command == "_line-of":
        line_of_variant(repo, sys.argv[3])
    elif command == "json":
        json_round_trip(repo)
    else:
        raise SystemExit(f"unknown command {command!r}: line-of or json")


if __name__ == "__main__":
    main()
