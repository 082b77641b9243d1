"""bad_daily's overrun policy is 99, which is no OverrunPolicy value."""

from datetime import datetime, timedelta

from pinball_ext.job_templates import CommandJobTemplate
from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

WORKFLOWS = {
    'good_daily': WorkflowConfig(
        jobs={
            'extract': JobConfig(CommandJobTemplate('extract', 'echo extract')),
            'load': JobConfig(CommandJobTemplate('load', 'echo load'), dependency=['extract']),
        },
        final_job_config=JobConfig(CommandJobTemplate('final', 'echo done')),
        schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, 6, 0))),
    'bad_daily': WorkflowConfig(
        jobs={'extract': JobConfig(CommandJobTemplate('extract', 'echo extract'))},
        final_job_config=JobConfig(CommandJobTemplate('final', 'echo done')),
        schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, 6, 0),
                                overrun_policy=99)),
}
