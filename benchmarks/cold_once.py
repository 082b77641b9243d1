"""One cold load, in this process, for a profiler to watch from start to end.

    py-spy record --subprocesses --format raw -o cold.raw -- \
        python -m benchmarks.cold_once CORPUS STATE_DIR

Starts a server on the corpus (a fresh STATE_DIR, with no version history, as in the
cold-load benchmark), waits until its first load is done, prints how long that took,
and stops. The sandbox's wall limit is raised to 300 s so that a big corpus on a busy
machine is not cut off.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from token_fetcher.config import parse_config
from token_fetcher.server import TokenFetcherServer


def main() -> None:
    corpus, state = Path(sys.argv[1]), Path(sys.argv[2])
    config = parse_config({
        "listen": "127.0.0.1:0", "metrics": "127.0.0.1:0", "state_dir": str(state),
        "sandbox": {"timeout_seconds": 300},
        "clusters": {"bench": {"repo": str(corpus),
                               "pinball_config": str(corpus / "pinball.yaml")}},
    }, state)
    server = TokenFetcherServer(config, shutdown_notice_seconds=0)
    started = time.monotonic()
    server.start()
    try:
        if not server.catalog.wait_ready(600):
            raise SystemExit("the first load did not finish in 600 s")
        snapshot = server.catalog.snapshot("bench")
        print(f"ready in {time.monotonic() - started:.2f} s: {len(snapshot.entries)} "
              f"workflows, {snapshot.job_count} jobs, parse {snapshot.load_duration:.2f} s",
              file=sys.stderr)
    finally:
        server.stop(grace=0)


if __name__ == "__main__":
    main()
