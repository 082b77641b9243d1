"""The Airflow plugin that registers PinballTimetable (entry point group
``airflow.plugins``), so the scheduler and the API server can deserialize DAGs that use
it."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from token_fetcher.airflow.timetable import PinballTimetable

__all__ = ["TokenFetcherPlugin"]


class TokenFetcherPlugin(AirflowPlugin):
    name = "token_fetcher"
    timetables = [PinballTimetable]
