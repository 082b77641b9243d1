"""Sandbox worker entry point: ``python -m legacy_parser.worker``.

Reads one parse request as JSON on stdin, writes the result as JSON on the original
stdout, and exits. Definition code's own prints go to stderr so they cannot corrupt
the result.
"""

from __future__ import annotations

import json
import os
import resource
import sys


def main() -> None:
    result_stream = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    request = json.loads(sys.stdin.read())
    memory = int(request["memory_bytes"])
    if memory > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu_seconds = int(request["cpu_seconds"])
    if cpu_seconds > 0:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))

    from legacy_parser.cluster import parse_here
    from legacy_parser.model import to_plain

    result = parse_here(request["cluster"], request["repo_root"], request["parser"],
                        request["parser_params"], request["default_email"],
                        request.get("pycache_dir", ""))
    json.dump({"result": to_plain(result)}, result_stream)
    result_stream.flush()
    # Skip interpreter teardown: definition code may have left threads or atexit hooks.
    os._exit(0)


if __name__ == "__main__":
    main()
