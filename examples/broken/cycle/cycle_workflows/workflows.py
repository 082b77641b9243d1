"""bad_daily: a -> b -> c -> a, and c -> report, a leaf that reaches the final job."""

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
            'a': JobConfig(CommandJobTemplate('a', 'echo a'), dependency=['c']),
            'b': JobConfig(CommandJobTemplate('b', 'echo b'), dependency=['a']),
            'c': JobConfig(CommandJobTemplate('c', 'echo c'), dependency=['b']),
            'report': JobConfig(CommandJobTemplate('report', 'echo report'),
                                dependency=['c']),
        },
        final_job_config=JobConfig(CommandJobTemplate('final', 'echo done')),
        schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, 6, 0))),
}
