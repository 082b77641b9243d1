"""Housekeeping jobs."""

from example_jobs.base import ExampleJob


class VacuumTablesJob(ExampleJob):
    ACTION = 'vacuum warehouse tables'


class CompactPartitionsJob(ExampleJob):
    ACTION = 'compact small partitions'


class SnapshotDatabaseJob(ExampleJob):
    ACTION = 'snapshot the database'


class FailingJob(ExampleJob):
    """Always fails, for failure drills and tests."""

    def run(self):
        print('%s: failing on purpose for %s' % (
            type(self).__name__, self.params.get('end_date', '?')))
        return 1
