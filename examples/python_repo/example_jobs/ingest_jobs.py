"""Ingestion jobs."""

from example_jobs.base import ExampleJob


class ParseLogsJob(ExampleJob):
    ACTION = 'parse fetched logs'


class DedupeEventsJob(ExampleJob):
    ACTION = 'remove duplicate events'


class LoadPartnerFeedJob(ExampleJob):
    ACTION = 'load the partner feed'


class SyncAuditJob(ExampleJob):
    ACTION = 'audit the synced tables'
