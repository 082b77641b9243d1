"""TokenFetcherClient: the scheduler's side of the token fetcher.

One gRPC channel per client, a deadline on every unary call, retries with backoff
and jitter for UNAVAILABLE, DEADLINE_EXCEEDED and CANCELLED only, and a cache of workflow specs
keyed by (cluster, workflow):

- a fresh entry (confirmed less than ``cache_ttl`` seconds ago) answers without an RPC;
- an expired entry is revalidated by fingerprint (``if_none_match``): the server
  answers ``not_modified`` without resending the spec;
- when the server cannot be reached, the last answer is served, marked ``stale``, up
  to ``max_stale`` seconds after it was last confirmed; after that the error is raised;
- optionally a background WatchWorkflows stream invalidates entries as soon as the
  server reports a change, instead of waiting for the TTL.

Results share protobuf messages with the cache, so a hit costs a lookup: treat them
as read-only (copy before mutating).

The modules, one concern each: ``_errors`` (status codes to exceptions), ``_models``
(what the methods return), ``_transport`` (the channel, deadlines, retries, metrics),
``_cache`` (specs by workflow and by fingerprint, and the watch that invalidates them),
``_resolution`` (the scheduler's calls through the cache, one or a batch per round trip),
``_client`` (the public methods). Imports only the generated stubs, the health stubs,
``token_fetcher.migration`` and ``token_fetcher.handovers``, never the server side.
"""

from token_fetcher.client._client import TokenFetcherClient
from token_fetcher.client._errors import (
    Broken,
    ContractError,
    InvalidArgument,
    NotFound,
    TokenFetcherError,
    Unavailable,
    error_for,
)
from token_fetcher.client._models import Handover, MigratedWorkflow, SpecResult, WorkflowWatch
from token_fetcher.client._resolution import MetadataOrPath
from token_fetcher.client._transport import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TARGET

__all__ = [
    "Broken",
    "ContractError",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_TARGET",
    "Handover",
    "InvalidArgument",
    "MetadataOrPath",
    "MigratedWorkflow",
    "NotFound",
    "SpecResult",
    "TokenFetcherClient",
    "TokenFetcherError",
    "Unavailable",
    "WorkflowWatch",
    "error_for",
]
