"""Summarize a py-spy ``--format raw`` profile (collapsed stacks) as text tables.

    py-spy record --subprocesses --format raw -o prof.raw -- COMMAND
    python -m benchmarks.profile_summary prof.raw [--top 25] [--rate 200]

Per process (py-spy's ``--subprocesses`` root frames) and per thread: the functions
with the most inclusive time (on the stack) and the most self time (at the top of the
stack). Samples are converted to seconds with ``--rate`` (py-spy's default: 100/s).
"""

from __future__ import annotations

import argparse
import collections
import re

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match.group("file")
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match.group('func')} ({path})"


def summarize(path: str, top: int, rate: float) -> str:
    inclusive: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    self_time: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    totals: collections.Counter = collections.Counter()
    with open(path) as handle:
        for raw in handle:
            match = _LINE.match(raw.rstrip("\n"))
            if not match:
                continue
            frames = match.group("stack").split(";")
            count = int(match.group("count"))
            # With --subprocesses a child's stack hangs under its parent's root frame:
            # the innermost "process ..." frame names the process that was sampled.
            process = "main"
            for index in range(len(frames) - 1, -1, -1):
                if frames[index].startswith("process "):
                    process = frames[index][:90]
                    frames = frames[index + 1:]
                    break
            frames = [f for f in frames if not f.startswith("thread ")]
            names = [_short(f) for f in frames]
            totals[process] += count
            for name in set(names):
                inclusive[process][name] += count
            if names:
                self_time[process][names[-1]] += count
    out = []
    for process, total in totals.most_common():
        out.append(f"== {process}: {total} samples = {total / rate:.2f} s")
        out.append(f"-- top {top} inclusive (s, % of process)")
        for name, count in inclusive[process].most_common(top):
            out.append(f"{count / rate:8.2f} {100 * count / total:5.1f}%  {name}")
        out.append(f"-- top {top} self (s, % of process)")
        for name, count in self_time[process].most_common(top):
            out.append(f"{count / rate:8.2f} {100 * count / total:5.1f}%  {name}")
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("raw")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--rate", type=float, default=100.0)
    args = parser.parse_args()
    print(summarize(args.raw, args.top, args.rate))


if __name__ == "__main__":
    main()
