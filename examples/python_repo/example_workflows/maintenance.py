"""Housekeeping workflows of the platform team."""

from datetime import datetime, timedelta

from pinball.config.pinball_config import PinballConfig
from pinball.scheduler.overrun_policy import OverrunPolicy
from pinball_ext.executor.common import Platform
from pinball_ext.job_templates import CommandJobTemplate, JobTemplate
from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

from example_workflows.templates import PathExistsConditionTemplate

PLATFORM_EMAILS = ['platform-oncall@example.com']

WEEKLY_CLEANUP_JOBS = {
    'vacuum_tables': JobConfig(
        JobTemplate('VacuumTablesJob', write_lock='warehouse')),
    'compact_partitions': JobConfig(
        JobTemplate('CompactPartitionsJob',
                    executor=Platform.EMR,
                    executor_config={'cluster_id': 'j-EXAMPLE0002'},
                    write_lock='warehouse',
                    priority=30),
        dependency=['vacuum_tables']),
    'rotate_logs': JobConfig(
        CommandJobTemplate('rotate_logs', 'echo "rotating logs older than 30 days"',
                           max_attempts=2, emails=[PinballConfig.DEFAULT_EMAIL]),
        dependency=[]),
}

DB_BACKUP_JOBS = {
    'snapshot_db': JobConfig(
        JobTemplate('SnapshotDatabaseJob', max_attempts=3, emails=PLATFORM_EMAILS,
                    warn_timeout_sec=10 * 60)),
    'verify_snapshot': JobConfig(
        CommandJobTemplate('verify_snapshot', 'test -d %(job_repo_dir)s', priority=5.5),
        dependency=['snapshot_db']),
}

# Kept on purpose: on-call uses it to check that failure alerts still reach them.
FAILURE_DRILL_JOBS = {
    'job_code_deployed': JobConfig(
        PathExistsConditionTemplate('job_code_deployed', path='example_jobs')),
    'always_fails': JobConfig(
        JobTemplate('FailingJob', emails=PLATFORM_EMAILS),
        dependency=['job_code_deployed']),
    'never_runs': JobConfig(
        CommandJobTemplate('never_runs', 'echo "unreachable: always_fails failed first"'),
        dependency=['always_fails']),
}

WORKFLOWS = {
    'weekly_cleanup': WorkflowConfig(
        jobs=WEEKLY_CLEANUP_JOBS,
        final_job_config=JobConfig(
            CommandJobTemplate('final', 'echo "weekly cleanup complete"')),
        schedule=ScheduleConfig(
            recurrence=timedelta(weeks=1),
            reference_timestamp=datetime(2015, 1, 4, 3, 0),  # a Sunday
            overrun_policy=OverrunPolicy.SKIP,
            max_running_instances=1),
        notify_emails='platform-oncall@example.com'),
    'db_backup': WorkflowConfig(
        jobs=DB_BACKUP_JOBS,
        final_job_config=JobConfig(CommandJobTemplate('final', 'echo backup done')),
        schedule=ScheduleConfig(
            recurrence=timedelta(days=1),
            reference_timestamp=datetime(2015, 1, 1, 1, 15),
            overrun_policy=None,
            max_running_instances=None),
        notify_emails=None),
    'failure_drill': WorkflowConfig(
        jobs=FAILURE_DRILL_JOBS,
        final_job_config=JobConfig(CommandJobTemplate('final', 'echo "drill over"')),
        schedule=ScheduleConfig(timedelta(hours=12), datetime(2015, 1, 1, 9, 0))),
}
