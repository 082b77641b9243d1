"""Metadata files -> layouts in one round trip, falling back on the last good ones."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from token_fetcher.airflow.layout_cache import LayoutCache
from token_fetcher.airflow.layouts import Layout, dag_id_for, dag_id_problem, task_ids_problem
from token_fetcher.airflow.problems import Problem
from token_fetcher.client import Broken, MigratedWorkflow, TokenFetcherClient, Unavailable
from token_fetcher.migration import MigrationMetadata

__all__ = ["Resolution", "resolve_layouts"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resolution:
    """What resolve_layouts() found: layouts sorted by dag_id, and problems."""

    layouts: tuple[Layout, ...] = ()
    problems: tuple[Problem, ...] = ()


# Errors after which the last good layout is still served: the server is unreachable,
# or it has no good version (it lost its history while the definition is broken).
_FALL_BACK_ON = (Unavailable, Broken)


def resolve_layouts(
    client: TokenFetcherClient,
    entries: Sequence[MigrationMetadata],
    *,
    cache: LayoutCache | None = None,
    fallback: dict[str, Layout] | None = None,
) -> Resolution:
    """Resolve metadata entries with ONE BatchResolveMigrations round trip (entries the
    client has fresh in its cache stay out of it).

    A workflow the server cannot answer for (unreachable, or broken with no good
    version) falls back to ``fallback`` (by dag_id, e.g. the previous manifest), then to
    the on-disk ``cache``; otherwise it becomes a Problem. Layouts the server confirmed
    are written to the cache.
    """
    layouts: list[Layout] = []
    problems: list[Problem] = []
    valid: list[MigrationMetadata] = []
    for entry in entries:
        problem = dag_id_problem(dag_id_for(entry.cluster_name, entry.workflow_name))
        if problem:
            problems.append(Problem(problem, entry.path, entry.cluster_name, entry.workflow_name))
        else:
            valid.append(entry)
    results = client.migrated_workflows(valid) if valid else []
    for entry, result in zip(valid, results, strict=True):
        where = (entry.path, entry.cluster_name, entry.workflow_name)
        if isinstance(result, MigratedWorkflow):
            problem = task_ids_problem(result.spec)
            if problem:  # Airflow cannot take it: a problem, not a DAG that fails to build
                problems.append(Problem(problem, *where))
                continue
            layout = Layout.from_migrated(result)
            if cache is not None and not layout.stale:
                cache.store(layout)
            layouts.append(layout)
            continue
        if isinstance(result, _FALL_BACK_ON):
            previous = _fallback_layout(entry, fallback, cache)
            if previous is not None:
                _log.warning(
                    "token-fetcher: %s/%s: %s; serving the last good layout %s (%s)",
                    entry.cluster_name,
                    entry.workflow_name,
                    result,
                    previous.fingerprint[:12],
                    previous.source,
                )
                layouts.append(previous)
                continue
        problems.append(Problem(str(result), *where))
    if cache is not None:
        cache.flush()
    layouts.sort(key=lambda layout: layout.dag_id)
    return Resolution(tuple(layouts), tuple(problems))


def _fallback_layout(
    entry: MigrationMetadata,
    fallback: dict[str, Layout] | None,
    cache: LayoutCache | None,
) -> Layout | None:
    dag_id = dag_id_for(entry.cluster_name, entry.workflow_name)
    if fallback and dag_id in fallback:
        previous = fallback[dag_id]
        try:
            return Layout.from_spec(
                entry, previous.fingerprint, previous.spec, stale=True, source=previous.source
            ).diagnosed_as(previous)
        except ValueError:
            return None
    return cache.load(entry) if cache is not None else None
