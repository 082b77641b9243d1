"""Reporting workflows of the analytics team."""

from datetime import datetime, timedelta

from pinball.config.pinball_config import PinballConfig
from pinball.scheduler.overrun_policy import OverrunPolicy
from pinball_ext.executor.common import Platform
from pinball_ext.job_templates import CommandJobTemplate, JobTemplate
from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

from example_workflows.templates import EmrJobTemplate, PathExistsConditionTemplate

REPORTING_EMAILS = ['reporting-oncall@example.com']

# job_code_deployed -> load_events -> revenue_report    -> publish_dashboard
#                                  \-> engagement_report -/
DAILY_REPORTING_JOBS = {
    'job_code_deployed': JobConfig(
        PathExistsConditionTemplate('job_code_deployed', path='example_jobs',
                                    max_attempts=12, retry_delay_sec=600)),
    'load_events': JobConfig(
        EmrJobTemplate('LoadEventsJob', priority=30),
        dependency=['job_code_deployed']),
    'revenue_report': JobConfig(
        EmrJobTemplate('RevenueReportJob', write_lock='reporting_db',
                       emails=REPORTING_EMAILS),
        dependency=['load_events']),
    'engagement_report': JobConfig(
        JobTemplate('EngagementReportJob',
                    executor=Platform.QUBOLE,
                    executor_config={'cluster_label': 'reporting', 'pool': 'batch'},
                    priority=5.5,
                    warn_timeout_sec=2 * 60 * 60,
                    abort_timeout_sec=4 * 60 * 60),
        dependency=['load_events']),
    'publish_dashboard': JobConfig(
        JobTemplate('PublishDashboardJob', max_attempts=3, emails=REPORTING_EMAILS),
        dependency=['revenue_report', 'engagement_report']),
}

HOURLY_METRICS_JOBS = {
    'compute_hourly_metrics': JobConfig(
        JobTemplate('ComputeHourlyMetricsJob', executor=Platform.LOCAL, max_attempts=3)),
    'push_metrics': JobConfig(
        CommandJobTemplate('push_metrics',
                           'echo "metrics pushed at $(date -u +%%Y-%%m-%%dT%%H:%%MZ)"'),
        dependency=['compute_hourly_metrics']),
}

WORKFLOWS = {
    'daily_reporting': WorkflowConfig(
        jobs=DAILY_REPORTING_JOBS,
        final_job_config=JobConfig(
            CommandJobTemplate('final', 'echo "daily_reporting done"')),
        schedule=ScheduleConfig(
            recurrence=timedelta(days=1),
            reference_timestamp=datetime(2015, 1, 1, 6, 0),
            overrun_policy=OverrunPolicy.DELAY_UNTIL_SUCCESS,
            max_running_instances=2),
        notify_emails='reporting-oncall@example.com,analytics@example.com'),
    'hourly_metrics': WorkflowConfig(
        jobs=HOURLY_METRICS_JOBS,
        final_job_config=JobConfig(CommandJobTemplate('final', 'true')),
        schedule=ScheduleConfig(
            recurrence=timedelta(hours=1),
            reference_timestamp=datetime(2015, 1, 1, 0, 5),
            overrun_policy=OverrunPolicy.START_NEW,
            max_running_instances=4),
        notify_emails=PinballConfig.DEFAULT_EMAIL),
}
