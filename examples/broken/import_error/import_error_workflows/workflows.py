"""Workflows of the ads team."""

from datetime import datetime, timedelta

from pinball_ext.job_templates import CommandJobTemplate
from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

from ads_common.constants import ADS_ONCALL_EMAIL

WORKFLOWS = {
    'ads_daily': WorkflowConfig(
        jobs={'spend': JobConfig(CommandJobTemplate('spend', 'echo spend'))},
        final_job_config=JobConfig(CommandJobTemplate('final', 'echo done')),
        schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, 6, 0)),
        notify_emails=ADS_ONCALL_EMAIL),
}
