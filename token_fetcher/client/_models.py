"""What the client's methods return besides protobuf messages."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import grpc

from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.client._errors import error_for
from token_fetcher.migration import MigrationMetadata

__all__ = ["Handover", "MigratedWorkflow", "SpecResult", "WorkflowWatch"]


@dataclass(frozen=True)
class SpecResult:
    """One workflow's spec. ``status`` is the server's parse status (PARSE_STATUS_STALE:
    the latest definition is broken, the last good one is served); ``stale`` says the
    client served its cache because the server could not be reached."""

    spec: pb.WorkflowSpec
    fingerprint: str
    status: int
    errors: tuple[pb.ParseError, ...]
    stale: bool = False


@dataclass(frozen=True)
class Handover:
    """Where Pinball stops and Airflow starts, as aware UTC datetimes, named as in the
    contract's Handover: grid points at or before ``migration_time`` (the metadata file's
    migration_date) are Pinball's, ``first_new_run_time`` (the first one strictly after
    it) is Airflow's first run. ``last_legacy_run_time`` is None when the migration date
    is before the schedule's reference time, so Pinball never ran the workflow."""

    migration_time: datetime
    last_legacy_run_time: datetime | None
    first_new_run_time: datetime


@dataclass(frozen=True)
class MigratedWorkflow:
    """What the DagBag needs for one metadata file: the spec, its fingerprint and the
    handover (computed from the spec's schedule; checked against the server's)."""

    metadata: MigrationMetadata
    spec: pb.WorkflowSpec
    fingerprint: str
    handover: Handover
    status: int
    errors: tuple[pb.ParseError, ...]
    stale: bool = False
    # The server saw the layout change while no file its parse read changed.
    dynamic: bool = False


class WorkflowWatch:
    """An iterator over WorkflowEvent messages (the first is TYPE_SUBSCRIBED).

    ``cancel()`` (or leaving the ``with`` block) ends the iteration cleanly; any other
    end of the stream raises the matching TokenFetcherError.
    """

    def __init__(self, call: Any) -> None:
        self._call = call
        self._cancelled = False

    def __iter__(self) -> Iterator[pb.WorkflowEvent]:
        return self

    def __next__(self) -> pb.WorkflowEvent:
        try:
            return next(self._call)
        except grpc.RpcError as exc:
            if self._cancelled and exc.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            raise error_for(exc.code(), exc.details() or "") from None

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    def __enter__(self) -> WorkflowWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()
