"""Reporting jobs."""

from example_jobs.base import ExampleJob


class LoadEventsJob(ExampleJob):
    ACTION = 'load raw events into the warehouse'


class RevenueReportJob(ExampleJob):
    ACTION = 'compute the revenue report'


class EngagementReportJob(ExampleJob):
    ACTION = 'compute the engagement report'


class PublishDashboardJob(ExampleJob):
    ACTION = 'publish the reporting dashboard'


class ComputeHourlyMetricsJob(ExampleJob):
    ACTION = 'compute hourly metrics'


class RollupExtractJob(ExampleJob):
    ACTION = 'extract the data of the daily rollup'


class RollupCountsJob(ExampleJob):
    ACTION = 'roll up event counts'


class RollupUsersJob(ExampleJob):
    ACTION = 'roll up active users'


class RollupPublishJob(ExampleJob):
    ACTION = 'publish the daily rollup'
