"""Where a cold load's time goes, stage by stage, in one process (a diagnostic).

    python -m benchmarks.stages CORPUS_DIR

Runs the same steps as a sandbox parse plus the catalog's first merge, timed one by
one: the worker's parse (imports + templates), its JSON encoding, the server's
decoding and typed rebuild, protobuf conversion with fingerprints, and the version
history write. Uses internal functions, so it reports what it could not time instead
of failing when they change. Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time

import yaml


def main() -> None:
    repo = sys.argv[1]
    with open(f"{repo}/pinball.yaml") as handle:
        setup = yaml.safe_load(handle)
    times: dict[str, float] = {}
    notes: list[str] = []
    clock = time.perf_counter

    from legacy_parser.cluster import parse_here
    from legacy_parser.model import ParseResult, from_plain, to_plain

    started = clock()
    result = parse_here("bench", repo, setup["parser"], setup.get("parser_params") or {},
                        setup.get("default_email") or "")
    times["worker: parse_here (imports, templates, graph)"] = clock() - started
    started = clock()
    plain = to_plain(result)
    times["worker: to_plain"] = clock() - started
    started = clock()
    data = json.dumps({"result": plain})
    times["worker: json.dumps"] = clock() - started
    times_bytes = len(data)
    started = clock()
    decoded = json.loads(data)["result"]
    times["server: json.loads"] = clock() - started
    started = clock()
    rebuilt = from_plain(ParseResult, decoded)
    times["server: from_plain"] = clock() - started
    try:
        from token_fetcher.snapshot_merge import version_of

        started = clock()
        versions = [version_of(workflow) for workflow in rebuilt.workflows]
        times["server: convert + fingerprint"] = clock() - started
    except Exception as error:  # noqa: BLE001 - internal API may have moved
        versions = []
        notes.append(f"convert not timed: {type(error).__name__}: {error}")
    try:
        from token_fetcher.history import VersionHistory

        with tempfile.TemporaryDirectory() as state:
            history = VersionHistory(state, 10)
            started = clock()
            history.save("bench", [(v.fingerprint, v.workflow) for v in versions])
            times["server: version history save"] = clock() - started
            history.close()
    except Exception as error:  # noqa: BLE001
        notes.append(f"history not timed: {type(error).__name__}: {error}")
    print(json.dumps({"seconds": times, "wire_bytes": times_bytes,
                      "workflows": len(result.workflows), "errors": len(result.errors),
                      "notes": notes}))


if __name__ == "__main__":
    main()
