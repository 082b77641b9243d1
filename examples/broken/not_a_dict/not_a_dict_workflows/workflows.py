"""WORKFLOWS is a list of configs instead of a dict keyed by workflow name."""

from datetime import datetime, timedelta

from pinball_ext.job_templates import CommandJobTemplate
from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

WORKFLOWS = [
    WorkflowConfig(
        jobs={'extract': JobConfig(CommandJobTemplate('extract', 'echo extract'))},
        final_job_config=JobConfig(CommandJobTemplate('final', 'echo done')),
        schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, 6, 0))),
]
