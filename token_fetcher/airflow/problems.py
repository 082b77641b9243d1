"""Why a migrated workflow gives no DAG: the problems a manifest and the problems file
report (a metadata file that cannot be used, a workflow the server cannot answer for, a
name Airflow does not take)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from token_fetcher import metadata_discovery

__all__ = ["Problem", "problems_from_discovery"]


@dataclass(frozen=True)
class Problem:
    """A metadata file or workflow that gives no DAG, with why."""

    message: str
    path: str = ""
    cluster: str = ""
    workflow: str = ""

    def __str__(self) -> str:
        where = f"{self.cluster}/{self.workflow}" if self.cluster else ""
        label = " ".join(part for part in (self.path, f"({where})" if where else "") if part)
        return f"{label}: {self.message}" if label else self.message

    def to_dict(self) -> dict[str, str]:
        return {
            "message": self.message,
            "path": self.path,
            "cluster": self.cluster,
            "workflow": self.workflow,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        return cls(
            message=str(data["message"]),
            path=str(data.get("path", "")),
            cluster=str(data.get("cluster", "")),
            workflow=str(data.get("workflow", "")),
        )


def warn_duplicates(duplicates: Iterable[tuple[str, str, list[str]]]) -> None:
    """Log each workflow that several metadata files name, and the file that is used."""
    for cluster, workflow, paths in duplicates:
        logging.getLogger(__name__).warning(
            "token-fetcher: %s/%s is named by several metadata files (%s); using %s",
            cluster, workflow, ", ".join(paths), paths[0])


def problems_from_discovery(discovery: metadata_discovery.Discovery) -> list[Problem]:
    """Unusable metadata files, as Problems (duplicates are warnings, not problems)."""
    return [Problem(error.problem, error.path) for error in discovery.errors]
