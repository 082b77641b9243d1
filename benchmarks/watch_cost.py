"""What the catalog's change detection costs: file-system notifications against polling.

    python -m benchmarks.watch_cost CORPUS [--polls 20]

Watches every visible file and folder listing of CORPUS (a JSON corpus of 3,000 workflows
has about 54,000), as a parse of it records them, once with polling only and once with
notifications, in this process, and reports the CPU time (this thread's) of: taking up
the paths after the first parse (``reset``), the first poll after it, a steady poll with
nothing changed, the same two after a re-parse that read the same files, and the poll
that finds one edited file. At the server's 1 s poll, CPU seconds
per poll is the share of a core the watch takes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from legacy_parser.digests import file_digest, folder_listing
from token_fetcher.watch import FileWatch


def watched_paths(root: Path) -> dict[str, str]:
    """Every visible file and folder listing under root, with its digest."""
    found = {}
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders
                         if not name.startswith(".") and name != "__pycache__"]
        listing = folder.rstrip(os.sep) + os.sep
        found[listing] = folder_listing(listing)[1]
        for name in files:
            if not name.startswith("."):
                path = os.path.join(folder, name)
                found[path] = file_digest(path)
    return found


def _cpu(action) -> tuple[float, object]:
    started = time.thread_time()
    value = action()
    return time.thread_time() - started, value


def measure(expected: dict[str, str], edited: Path, notify: bool, polls: int) -> dict:
    watch = FileWatch(notify=notify)
    try:
        reset_cpu, _ = _cpu(lambda: watch.reset(expected, []))
        first_cpu, first = _cpu(watch.changed)
        if first:
            raise RuntimeError(f"the corpus changed under the watch: {first[:3]}")
        steady = []
        for _ in range(polls):
            cpu, found = _cpu(watch.changed)
            if found:
                raise RuntimeError(f"the corpus changed under the watch: {found[:3]}")
            steady.append(cpu)
            time.sleep(0.05)  # let other work in
        # A re-parse that read the same files takes them up again.
        again_cpu, _ = _cpu(lambda: watch.reset(expected, []))
        again_first_cpu, _ = _cpu(watch.changed)
        original = edited.read_bytes()
        edited.write_bytes(original + b" ")
        try:
            edit_cpu, found = _cpu(watch.changed)
        finally:
            edited.write_bytes(original)
        if found != [str(edited)]:
            raise RuntimeError(f"the edit of {edited} was not reported: {found[:3]}")
        return {"notify": notify, "paths": len(expected), "notified": watch.notified,
                "reset_cpu_s": reset_cpu, "first_poll_cpu_s": first_cpu,
                "steady_poll_cpu_s": sorted(steady)[len(steady) // 2],
                "edit_poll_cpu_s": edit_cpu, "reparse_reset_cpu_s": again_cpu,
                "reparse_first_poll_cpu_s": again_first_cpu}
    finally:
        watch.close()


def compare(corpus: Path, polls: int = 20) -> dict:
    """Polling, then notifications, over the same paths in one run."""
    expected = watched_paths(corpus)
    edited = next(Path(path) for path in sorted(expected) if not path.endswith(os.sep))
    poll = measure(expected, edited, notify=False, polls=polls)
    notify = measure(expected, edited, notify=True, polls=polls)
    return {"poll": poll, "notify": notify,
            "ratio": notify["steady_poll_cpu_s"] / poll["steady_poll_cpu_s"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--polls", type=int, default=20)
    args = parser.parse_args(argv)
    print(json.dumps(compare(args.corpus, args.polls), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
