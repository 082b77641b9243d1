"""token-fetcher: legacy Pinball workflows served over gRPC for an Airflow migration."""

__version__ = "0.1.0"
