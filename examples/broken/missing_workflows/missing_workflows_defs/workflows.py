"""The dict is named WORKFLOW, but pinball.yaml asks for WORKFLOWS."""

from datetime import datetime, timedelta

from pinball_ext.job_templates import CommandJobTemplate
from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

WORKFLOW = {
    'good_daily': WorkflowConfig(
        jobs={
            'extract': JobConfig(CommandJobTemplate('extract', 'echo extract')),
            'load': JobConfig(CommandJobTemplate('load', 'echo load'), dependency=['extract']),
        },
        final_job_config=JobConfig(CommandJobTemplate('final', 'echo done')),
        schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, 6, 0))),
}
