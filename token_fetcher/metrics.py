"""The server's Prometheus metrics, on a registry of their own (served on their own port)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
_LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)


class ServerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.rpcs = Counter("token_fetcher_rpcs_total", "RPCs answered, by method and status code",
                            ["method", "code"], registry=r)
        self.rpc_duration = Histogram("token_fetcher_rpc_duration_seconds",
                                      "Time to answer an RPC", ["method"], buckets=_RPC_BUCKETS,
                                      registry=r)
        self.in_flight = Gauge("token_fetcher_rpcs_in_flight", "RPCs being answered now",
                               registry=r)
        self.parse_duration = Histogram("token_fetcher_parse_duration_seconds",
                                        "Time to parse a cluster in the sandbox", ["cluster"],
                                        buckets=_LOAD_BUCKETS, registry=r)
        self.parses = Counter("token_fetcher_parses_total",
                              "Cluster parses (each a full parse in a fresh worker)",
                              ["cluster"], registry=r)
        self.parse_errors = Counter("token_fetcher_parse_errors_total",
                                    "Errors found by parses, by kind", ["cluster", "kind"],
                                    registry=r)
        self.workflows = Gauge("token_fetcher_workflows", "Workflows served, by parse status",
                               ["cluster", "status"], registry=r)
        self.dynamic_workflows = Gauge("token_fetcher_dynamic_workflows",
                                       "Workflows whose layout changed between parses of the "
                                       "same files", ["cluster"], registry=r)
        self.dynamic_changes = Counter("token_fetcher_dynamic_layout_changes_total",
                                       "Layout changes with no change to the files the parse "
                                       "read", ["cluster"], registry=r)
        self.last_success = Gauge("token_fetcher_last_successful_load_timestamp_seconds",
                                  "When a parse of the cluster last had no errors", ["cluster"],
                                  registry=r)
        self.refresh_lag = Histogram("token_fetcher_refresh_lag_seconds",
                                     "From noticing a changed file to serving the new snapshot",
                                     ["cluster"], buckets=_LOAD_BUCKETS, registry=r)
        self.snapshot_bytes = Gauge("token_fetcher_snapshot_bytes",
                                    "Serialized size of the specs served", ["cluster"],
                                    registry=r)
        self.state_store_healthy = Gauge("token_fetcher_state_store_healthy",
                                         "1 when past versions are being saved, 0 when the state "
                                         "directory fails and versions live in memory only",
                                         registry=r)
        self.sandbox_layers = Gauge("token_fetcher_sandbox_layer",
                                    "1 for each isolation layer parses run under, 0 for each "
                                    "one this host cannot give (sandbox.isolation: best_effort)",
                                    ["layer"], registry=r)

    def record_load(self, cluster: str, *, parse_seconds: float, error_kinds: Iterable[str],
                    workflows: Mapping[str, int], dynamic_workflows: int,
                    dynamic_changes: int, last_success: float | None,
                    snapshot_bytes: int) -> None:
        """One parse of ``cluster``: ``error_kinds`` has one item per error found,
        ``workflows`` counts the workflows served by parse status ("ok", "stale", ...)."""
        self.parse_duration.labels(cluster).observe(parse_seconds)
        self.parses.labels(cluster).inc()
        for kind in error_kinds:
            self.parse_errors.labels(cluster, kind).inc()
        for status, count in workflows.items():
            self.workflows.labels(cluster, status).set(count)
        self.dynamic_workflows.labels(cluster).set(dynamic_workflows)
        self.dynamic_changes.labels(cluster).inc(dynamic_changes)
        if last_success is not None:
            self.last_success.labels(cluster).set(last_success)
        self.snapshot_bytes.labels(cluster).set(snapshot_bytes)
