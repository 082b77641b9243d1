"""Month-end workflows: the reference date does not exist (February 30)."""

from datetime import datetime, timedelta

from pinball_ext.job_templates import CommandJobTemplate
from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

MONTH_END = datetime(2015, 2, 30, 6, 0)

WORKFLOWS = {
    'month_end_close': WorkflowConfig(
        jobs={'close_books': JobConfig(CommandJobTemplate('close_books', 'echo close'))},
        final_job_config=JobConfig(CommandJobTemplate('final', 'echo done')),
        schedule=ScheduleConfig(timedelta(days=1), MONTH_END)),
}
