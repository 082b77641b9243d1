"""bad_daily: extract -> load reaches the final job; a <-> b is a cycle with no
other children, so no path from it leads to the final job and Pinball never
sees it (a and b silently vanish from its tokens)."""

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
        jobs={
            'extract': JobConfig(CommandJobTemplate('extract', 'echo extract')),
            'load': JobConfig(CommandJobTemplate('load', 'echo load'), dependency=['extract']),
            'a': JobConfig(CommandJobTemplate('a', 'echo a'), dependency=['b']),
            'b': JobConfig(CommandJobTemplate('b', 'echo b'), dependency=['a']),
        },
        final_job_config=JobConfig(CommandJobTemplate('final', 'echo done')),
        schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, 6, 0))),
}
