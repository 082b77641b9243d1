"""Ingestion workflows of the data platform team."""

from datetime import datetime, timedelta

from pinball.config.pinball_config import PinballConfig
from pinball.scheduler.overrun_policy import OverrunPolicy
from pinball_ext.executor.common import Platform
from pinball_ext.job_templates import CommandJobTemplate, JobTemplate
from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

from example_workflows.templates import EmrJobTemplate

INGEST_EMAILS = ['ingest-oncall@example.com']

# A straight line; notify_child's placeholder is filled by Pinball at run time
# from the triggering event's attributes, so it stays in the command as it is.
EVENT_INGEST_JOBS = {
    'fetch_logs': JobConfig(
        CommandJobTemplate(
            'fetch_logs',
            'cd %(job_repo_dir)s && echo "fetching logs for $(date -u +%%Y%%m%%d)"',
            max_attempts=3,
            emails=INGEST_EMAILS),
        dependency=None),
    'parse_logs': JobConfig(
        JobTemplate('ParseLogsJob',
                    executor=Platform.LOCAL,
                    max_attempts=2,
                    warn_timeout_sec=30 * 60,
                    abort_timeout_sec=60 * 60),
        dependency=['fetch_logs']),
    'dedupe_events': JobConfig(
        JobTemplate('DedupeEventsJob', write_lock='events_table', priority=0),
        dependency=['parse_logs']),
    'notify_child': JobConfig(
        CommandJobTemplate('notify_child', 'echo "child: %%(a_cmd_key)s"'),
        dependency=['dedupe_events']),
}

PARTNER_INGEST_JOBS = {
    'download_feed': JobConfig(
        CommandJobTemplate('download_feed', 'echo "downloading partner feed"',
                           max_attempts=None)),
    'load_feed': JobConfig(
        EmrJobTemplate('LoadPartnerFeedJob', abort_timeout_sec=2 * 60 * 60),
        dependency=['download_feed']),
    'check_feed': JobConfig(
        CommandJobTemplate('check_feed', 'test -d %(job_repo_dir)s/example_jobs'),
        dependency=['download_feed']),
}

WORKFLOWS = {
    'event_ingest': WorkflowConfig(
        jobs=EVENT_INGEST_JOBS,
        final_job_config=JobConfig(
            CommandJobTemplate('final', 'echo "event_ingest finished"')),
        schedule=ScheduleConfig(
            recurrence=timedelta(hours=7),
            reference_timestamp=datetime(2015, 1, 1, 0, 0),
            overrun_policy=OverrunPolicy.ABORT_RUNNING,
            max_running_instances=1),
        notify_emails='ingest-oncall@example.com'),
    'partner_ingest': WorkflowConfig(
        jobs=PARTNER_INGEST_JOBS,
        # The final job is always named "final", whatever its template is called.
        # Pinball builds it without parser params, so it cannot use %(...)s or
        # a JobTemplate.
        final_job_config=JobConfig(
            CommandJobTemplate('partner_ingest_done', 'echo "partner feed ingested"')),
        schedule=ScheduleConfig(
            recurrence=timedelta(days=1),
            reference_timestamp=datetime(2015, 1, 1, 2, 30),
            overrun_policy=OverrunPolicy.DELAY,
            max_running_instances=PinballConfig.DEFAULT_MAX_WORKFLOW_RUNNING_INSTANCES),
        notify_emails='ingest-oncall@example.com,partners@example.com'),
}
