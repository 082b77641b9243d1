"""Daily workflows."""

from datetime import datetime, timedelta

from pinball_ext.job_templates import CommandJobTemplate
from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig


def daily_at(hour)
    return ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, hour, 0))


WORKFLOWS = {
    'daily_report': WorkflowConfig(
        jobs={'report': JobConfig(CommandJobTemplate('report', 'echo report'))},
        final_job_config=JobConfig(CommandJobTemplate('final', 'echo done')),
        schedule=daily_at(6)),
}
