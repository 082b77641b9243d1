"""The scheduler's calls: the workflow a metadata file names, through the cache, one at
a time or many per BatchResolveMigrations round trip, with the server's handover checked
against the spec's schedule."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from token_fetcher import handovers, migration
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.client._cache import Entry, SpecCache
from token_fetcher.client._errors import (
    ContractError,
    TokenFetcherError,
    code_from_number,
    error_for,
)
from token_fetcher.client._models import Handover, MigratedWorkflow
from token_fetcher.client._transport import Transport
from token_fetcher.migration import MetadataError, MigrationMetadata

__all__ = ["MetadataOrPath", "Resolver", "as_metadata", "resolve_request"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

MetadataOrPath = MigrationMetadata | str | os.PathLike[str]


class Resolver:
    """TokenFetcherClient's migrated_workflow() and migrated_workflows()."""

    def __init__(self, transport: Transport, cache: SpecCache) -> None:
        self._transport = transport
        self._cache = cache

    def migrated_workflow(self, metadata_or_path: MetadataOrPath) -> MigratedWorkflow:
        metadata = as_metadata(metadata_or_path)
        key = (metadata.cluster_name, metadata.workflow_name)
        entry, fresh, seen = self._cache.lookup(key)
        if fresh:
            assert entry is not None
            return self._fresh(metadata, entry)
        started = self._cache.clock()
        outcome: pb.ResolveMigrationResponse | TokenFetcherError
        try:
            outcome = self._transport.call("ResolveMigration", resolve_request(metadata, entry))
        except TokenFetcherError as exc:
            outcome = exc
        return self._settle(metadata, key, entry, seen, started, outcome)

    def migrated_workflows(
        self, items: Sequence[MetadataOrPath], batch_size: int
    ) -> list[MigratedWorkflow | TokenFetcherError | MetadataError]:
        """Input order; a failed item holds its exception; ``batch_size`` items per call."""
        results: list[Any] = [None] * len(items)
        pending: list[tuple[int, MigrationMetadata, tuple[str, str], Entry | None, int]] = []
        for index, item in enumerate(items):
            try:
                metadata = as_metadata(item)
                key = (metadata.cluster_name, metadata.workflow_name)
                entry, fresh, seen = self._cache.lookup(key)
                if fresh:
                    assert entry is not None
                    results[index] = self._fresh(metadata, entry)
                else:
                    pending.append((index, metadata, key, entry, seen))
            except (MetadataError, TokenFetcherError) as exc:
                results[index] = exc
        for start in range(0, len(pending), batch_size):
            self._resolve_batch(pending[start : start + batch_size], results)
        return results

    def _resolve_batch(self, pending: list[Any], results: list[Any]) -> None:
        started = self._cache.clock()
        request = pb.BatchResolveMigrationsRequest(
            migrations=[resolve_request(metadata, entry) for _, metadata, _, entry, _ in pending]
        )
        outcomes: list[Any]
        try:
            answers = self._transport.call("BatchResolveMigrations", request).results
            if len(answers) != len(pending):
                raise ContractError(
                    f"BatchResolveMigrations answered {len(answers)} of {len(pending)} items"
                )
            outcomes = [
                error_for(code_from_number(answer.error.code), answer.error.message)
                if answer.HasField("error")
                else answer.response
                for answer in answers
            ]
        except TokenFetcherError as exc:
            # The whole round trip failed: every item gets the error (or its stale answer).
            outcomes = [exc] * len(pending)
        for (index, metadata, key, entry, seen), outcome in zip(pending, outcomes, strict=True):
            try:
                results[index] = self._settle(metadata, key, entry, seen, started, outcome)
            except TokenFetcherError as exc:
                results[index] = exc

    def _settle(
        self,
        metadata: MigrationMetadata,
        key: tuple[str, str],
        entry: Entry | None,
        seen: int,
        started: float,
        outcome: pb.ResolveMigrationResponse | TokenFetcherError,
    ) -> MigratedWorkflow:
        if isinstance(outcome, TokenFetcherError):
            return self._migrated(metadata, self._cache.fallback(key, entry, outcome), stale=True)
        stored = self._cache.store(key, entry, outcome, started, seen)
        server = outcome.handover if outcome.HasField("handover") else None
        return self._migrated(metadata, stored, stale=False, server_handover=server)

    @classmethod
    def _fresh(cls, metadata: MigrationMetadata, entry: Entry) -> MigratedWorkflow:
        """A fresh hit: what the entry last built for this metadata, else a new build."""
        built = entry.built
        if built and built[0].metadata == metadata and built[0].metadata.path == metadata.path:
            return built[0]
        migrated = cls._migrated(metadata, entry, stale=False)
        built[:] = [migrated]
        return migrated

    @staticmethod
    def _migrated(
        metadata: MigrationMetadata,
        entry: Entry,
        *,
        stale: bool,
        server_handover: pb.Handover | None = None,
    ) -> MigratedWorkflow:
        name = f"{metadata.cluster_name}/{metadata.workflow_name}"
        computed = handovers.schedule_handover(entry.spec, metadata.migration_epoch)
        if computed is None and server_handover is not None:
            computed = _server_handover(server_handover)
        if computed is None:
            raise ContractError(f"{name}: the spec has no usable schedule")
        if server_handover is not None and _server_handover(server_handover) != computed:
            raise ContractError(
                f"{name}: the server's handover {_server_handover(server_handover)} disagrees "
                f"with the spec's schedule {computed}"
            )
        last_legacy_run = computed.last_legacy_run
        return MigratedWorkflow(
            metadata=metadata,
            spec=entry.spec,
            fingerprint=entry.fingerprint,
            handover=Handover(
                migration_time=metadata.migration_date,
                last_legacy_run_time=None if last_legacy_run is None else _utc(last_legacy_run),
                first_new_run_time=_utc(computed.first_new_run),
            ),
            status=entry.status,
            errors=entry.errors,
            stale=stale,
            dynamic=entry.dynamic,
        )


def as_metadata(value: MetadataOrPath) -> MigrationMetadata:
    if isinstance(value, MigrationMetadata):
        return value
    return migration.read_metadata(value)


def _utc(epoch: int) -> datetime:
    return _EPOCH + timedelta(seconds=epoch)


def _server_handover(message: pb.Handover) -> handovers.Handover:
    last = (message.last_legacy_run_time.seconds if message.HasField("last_legacy_run_time")
            else None)
    return handovers.Handover(last_legacy_run=last,
                              first_new_run=message.first_new_run_time.seconds)


def resolve_request(
    metadata: MigrationMetadata, entry_or_fingerprint: Entry | str | None
) -> pb.ResolveMigrationRequest:
    if isinstance(entry_or_fingerprint, Entry):
        if_none_match = entry_or_fingerprint.fingerprint
    else:
        if_none_match = entry_or_fingerprint or ""
    return pb.ResolveMigrationRequest(
        cluster=metadata.cluster_name,
        workflow=metadata.workflow_name,
        migration_time=Timestamp(seconds=metadata.migration_epoch),
        if_none_match=if_none_match,
    )
