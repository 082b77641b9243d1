"""Command templates are formatted with the parser params: missing_param names a
param that does not exist, lone_percent has a '%' that is not doubled."""

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
    'missing_param': WorkflowConfig(
        jobs={
            'export': JobConfig(CommandJobTemplate(
                'export', 'cd %(job_repo_dir)s && echo "export to %(no_such_param)s"')),
        },
        final_job_config=JobConfig(CommandJobTemplate('final', 'echo done')),
        schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, 6, 0))),
    'lone_percent': WorkflowConfig(
        jobs={
            'check_disk': JobConfig(CommandJobTemplate(
                'check_disk', 'echo disk usage above 90%')),
        },
        final_job_config=JobConfig(CommandJobTemplate('final', 'echo done')),
        schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, 6, 0))),
}
