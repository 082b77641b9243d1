"""What the loader file in the dags folder runs: one DAG per migration metadata file.

Two ways to get the layouts:

- **dags folder** (Airflow's default, unversioned bundle): discover the metadata files
  and resolve them through the client with ONE BatchResolveMigrations round trip. When
  a worker parses the file for one task (``get_parsing_context().dag_id`` is set), only
  that DAG's metadata file is resolved and only that DAG is built. Layouts the server
  confirms go to an on-disk cache; while the server is unreachable the client serves its
  in-memory answers up to ``max_stale``, and a fresh process falls back to the disk
  cache, so the DAGs stay as they were.
- **token-fetcher bundle** (``TokenFetcherDagBundle``): the loader finds a manifest
  next to itself and builds the DAGs from it without any RPC. The bundle wrote that
  manifest when it computed the bundle version, so a worker running a task of a DagRun
  parses exactly the layouts that run was created with.

With several loader files (``share``/``shares``, written by ``write-loader --files`` or
the bundle for a large corpus), each builds the DAGs of one share: the workflows a
stable hash of ``cluster/workflow`` puts there, so every DAG is built by exactly one
file, and no single file's parse nears Airflow's ``dagbag_import_timeout``.

A metadata file or workflow that gives no DAG is logged (and issued as a Python
warning, which Airflow 3.3 keeps in the DAG processor's log only); the other DAGs are
built all the same. The problems file next to the loader file turns them into an
import error (``raise_problems``; in the dags folder, from the record a full parse
writes to ``cache_dir``). When nothing at all can be built and something
went wrong, the parse fails with every problem in the message.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import re
import threading
import warnings
from collections.abc import Iterable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

from token_fetcher.airflow.layout_cache import LayoutCache
from token_fetcher.airflow.layouts import Layout, dag_id_for
from token_fetcher.airflow.manifest import MANIFEST_FILE_NAME, Manifest
from token_fetcher.airflow.problems import Problem, problems_from_discovery, warn_duplicates
from token_fetcher.airflow.resolution import resolve_layouts
from token_fetcher.airflow.settings import Settings
from token_fetcher.client import TokenFetcherClient
from token_fetcher.metadata_discovery import discover_metadata
from token_fetcher.partitions import hash_partition

__all__ = [
    "LoadResult",
    "MigratedWorkflowProblems",
    "TokenFetcherParseWarning",
    "get_client",
    "load_dags",
    "load_layouts",
    "raise_problems",
]

_log = logging.getLogger(__name__)
_FROM_SERVER = "token fetcher"
_clients: dict[tuple[str, float, int, float, float], TokenFetcherClient] = {}
_clients_lock = threading.Lock()


class TokenFetcherParseWarning(UserWarning):
    """A migrated workflow that gives no DAG (in the DAG processor's log)."""


class MigratedWorkflowProblems(Exception):
    """Migrated workflows that give no DAG: the import error of the problems file."""


# In the dags-folder mode: the problems of the loader's last full parse, in cache_dir
# (one record per loader file when there are several: problems-manifest-2-of-4.json).
PROBLEMS_RECORD_NAME = "problems-manifest.json"
_SHARE_RECORD_GLOB = "problems-manifest-*-of-*.json"


def raise_problems(here: str) -> None:
    """What the problems file runs: raise the problems of the manifest next to it (the
    bundle), or else of the loader's last full parse (the dags folder), so Airflow
    records them as the file's import error; nothing when there are none."""
    manifest = Path(here).with_name(MANIFEST_FILE_NAME)
    records = [manifest]
    if not manifest.exists():
        cache_dir = Settings.from_airflow_conf().cache_dir
        if cache_dir:
            records = [Path(cache_dir) / PROBLEMS_RECORD_NAME,
                       *sorted(Path(cache_dir).glob(_SHARE_RECORD_GLOB))]
    problems = list(dict.fromkeys(p for path in records for p in Manifest.read_problems(path)))
    if problems:
        raise MigratedWorkflowProblems(
            f"token-fetcher: {len(problems)} migrated workflow(s) give no DAG:\n"
            + "\n".join(f"- {problem}" for problem in problems)
        )


def get_client(settings: Settings) -> TokenFetcherClient:
    """One client per process and settings: its cache (and so max_stale) lives as long
    as the process, across parses."""
    key = (
        settings.target,
        settings.timeout,
        settings.retries,
        settings.cache_ttl,
        settings.max_stale,
    )
    with _clients_lock:
        client = _clients.get(key)
        if client is None or client.closed:
            client = TokenFetcherClient(
                settings.target,
                timeout=settings.timeout,
                retries=settings.retries,
                cache_ttl=settings.cache_ttl,
                max_stale=settings.max_stale,
            )
            _clients[key] = client
        return client


@atexit.register
def _close_clients() -> None:
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()


class LoadResult:
    """Layouts found for one parse, the problems, and where they came from."""

    def __init__(self, layouts: Iterable[Layout], problems: Iterable[Problem], source: str) -> None:
        self.layouts = list(layouts)
        self.problems = list(problems)
        self.source = source


def share_of(cluster: str, workflow: str, shares: int) -> int:
    """Which loader file (of ``shares``) builds this workflow's DAG."""
    return hash_partition(cluster, workflow, shares) if shares > 1 else 0


def _problem_share(problem: Problem, shares: int) -> int:
    # A problem that names no workflow (an unreadable metadata file) goes to the first.
    return share_of(problem.cluster, problem.workflow, shares) if problem.cluster else 0


def load_layouts(
    settings: Settings,
    *,
    dag_id: str | None = None,
    manifest_path: Path | None = None,
    share: int = 0,
    shares: int = 1,
) -> LoadResult:
    """The layouts to build (only ``dag_id``'s when given) of loader file ``share`` of
    ``shares``."""
    if not 0 <= share < shares:
        raise ValueError(f"token-fetcher: loader file share {share} of {shares}: the share "
                         f"must be in 0..{shares - 1}")
    if manifest_path is not None and manifest_path.exists():
        manifest = Manifest.read(manifest_path)
        layouts = [
            lay
            for lay in manifest.layouts
            if (dag_id is None or lay.dag_id == dag_id)
            and share_of(lay.cluster, lay.workflow, shares) == share
        ]
        problems = [
            problem
            for problem in manifest.problems
            if (dag_id is None or dag_id_for(problem.cluster, problem.workflow) == dag_id)
            and _problem_share(problem, shares) == share
        ]
        return LoadResult(layouts, problems, f"manifest {manifest.version}")

    discovery = discover_metadata(settings.migrations_dir)
    entries = [
        e for e in discovery.entries if share_of(e.cluster_name, e.workflow_name, shares) == share
    ]
    problems: list[Problem] = []
    if dag_id is None:
        problems += [
            problem
            for problem in problems_from_discovery(discovery)
            if _problem_share(problem, shares) == share
        ]
        warn_duplicates(duplicate for duplicate in discovery.duplicates
                        if share_of(duplicate[0], duplicate[1], shares) == share)
    else:
        entries = [e for e in entries if dag_id_for(e.cluster_name, e.workflow_name) == dag_id]
    cache = LayoutCache(settings.cache_dir) if settings.cache_dir else None
    resolution = resolve_layouts(get_client(settings), entries, cache=cache)
    return LoadResult(resolution.layouts, problems + list(resolution.problems), _FROM_SERVER)


def _problems_record_name(share: int, shares: int) -> str:
    if shares == 1:
        return PROBLEMS_RECORD_NAME
    return f"problems-manifest-{share + 1}-of-{shares}.json"


def _record_problems(
    settings: Settings, problems: list[Problem], share: int, shares: int
) -> None:
    """Keep a full parse's problems where the problems file reads them (rewritten only
    when they change), and drop the records of another split into loader files."""
    if not settings.cache_dir:
        return
    folder = Path(settings.cache_dir)
    path = folder / _problems_record_name(share, shares)
    ours = {_problems_record_name(i, shares) for i in range(shares)}
    try:
        if list(Manifest.read_problems(path)) != problems:
            Manifest((), tuple(problems)).write(path)
        for other in [folder / PROBLEMS_RECORD_NAME, *folder.glob(_SHARE_RECORD_GLOB)]:
            if other.name not in ours:
                other.unlink(missing_ok=True)
    except (OSError, ValueError, KeyError) as exc:  # a record: never fail a parse for it
        _log.warning("token-fetcher: cannot record the problems in %s: %s", path, exc)


def _variable_name(dag_id: str) -> str:
    return "dag__" + re.sub(r"\W", "_", dag_id)


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while the DAGs are built, and what the build made
    moved to the collector's oldest generation afterwards.

    Building thousands of DAGs allocates millions of long-lived objects (every task has
    dozens of attributes); each allocation burst triggers a collection, and the full
    ones traverse the whole, growing heap: about 1.5 s of a 3,000-DAG parse. The build
    makes next to no cyclic garbage. Switched back on, though, the collector would find
    every object of the build in its youngest generation and go over them twice, once
    per young generation (2 to 2.5 s at 10,000 DAGs). ``gc.freeze()`` then
    ``gc.unfreeze()`` moves them to the oldest generation without going over them; they
    stay collectable there. When something had frozen objects before (Airflow's DAG
    processor freezes its heap before it forks a parse, to keep its pages shared),
    unfreezing would thaw those too: then one collection of the young generations moves
    the build's objects instead, one pass rather than two. A caller that had the
    collector off gets no collection.
    """
    enabled = gc.isenabled()
    frozen_before = gc.get_freeze_count()
    gc.disable()
    try:
        yield
    finally:
        if not frozen_before:
            gc.freeze()
            gc.unfreeze()
        elif enabled:
            gc.collect(1)
        if enabled:
            gc.enable()


def load_dags(
    namespace: MutableMapping[str, Any],
    settings: Settings | None = None,
    *,
    share: int = 0,
    shares: int = 1,
) -> list[Any]:
    """Build the DAGs of share ``share`` of ``shares`` into ``namespace`` (the loader
    file's globals) and return them."""
    from airflow.sdk import get_parsing_context

    from token_fetcher.airflow.dags import SharedArgs, build_dag

    settings = settings or Settings.from_airflow_conf()
    wanted = get_parsing_context().dag_id
    here = namespace.get("__file__")
    manifest_path = Path(here).with_name(MANIFEST_FILE_NAME) if here else None
    result = load_layouts(
        settings, dag_id=wanted, manifest_path=manifest_path, share=share, shares=shares
    )

    dags = []
    problems = list(result.problems)
    shared = SharedArgs()
    with _cyclic_gc_paused():
        for layout in result.layouts:
            try:
                dag = build_dag(layout, settings, shared)
            except ValueError as exc:
                problems.append(
                    Problem(str(exc), layout.metadata.path, layout.cluster, layout.workflow)
                )
                continue
            if layout.stale:
                _log.warning(
                    "token-fetcher: %s built from the last good layout %s (%s): the token "
                    "fetcher could not confirm it",
                    layout.dag_id,
                    layout.fingerprint[:12],
                    layout.source,
                )
            namespace[_variable_name(dag.dag_id)] = dag
            dags.append(dag)
    _log.info(
        "token-fetcher: %d DAG(s) from %s, %d problem(s)", len(dags), result.source, len(problems)
    )
    if wanted is None and result.source == _FROM_SERVER:
        _record_problems(settings, problems, share, shares)
    for problem in problems:
        _log.warning("token-fetcher: no DAG for %s", problem)
        warnings.warn(
            f"token-fetcher: no DAG for {problem}", TokenFetcherParseWarning, stacklevel=2
        )
    if problems and not dags:
        raise RuntimeError(
            "token-fetcher: no DAG could be built:\n" + "\n".join(f"- {p}" for p in problems)
        )
    return dags
