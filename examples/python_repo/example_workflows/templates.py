"""Templates shared by the team's workflows."""

from pinball.workflow.job import ShellConditionJob
from pinball_ext.executor.common import Platform
from pinball_ext.job_templates import ConditionTemplateBase, JobTemplate

# The shared EMR cluster that runs the heavy reporting jobs.
REPORTING_EMR_CONFIG = {
    'cluster_id': 'j-EXAMPLE0001',
    'queue': 'reporting',
}


class EmrJobTemplate(JobTemplate):
    """A job class run on the reporting EMR cluster."""

    def __init__(self, name, write_lock=None, max_attempts=2, emails=None,
                 priority=None, warn_timeout_sec=None, abort_timeout_sec=None):
        super(EmrJobTemplate, self).__init__(
            name,
            executor=Platform.EMR,
            executor_config=dict(REPORTING_EMR_CONFIG),
            write_lock=write_lock,
            max_attempts=max_attempts,
            emails=emails,
            priority=priority,
            warn_timeout_sec=warn_timeout_sec,
            abort_timeout_sec=abort_timeout_sec)


class PathExistsConditionTemplate(ConditionTemplateBase):
    """A condition that holds once a path exists on the worker.

    The path is relative to the job repo root, where commands run.
    """

    def __init__(self, name, path, max_attempts=10, retry_delay_sec=300,
                 emails=None, priority=None):
        super(PathExistsConditionTemplate, self).__init__(
            name,
            max_attempts=max_attempts,
            retry_delay_sec=retry_delay_sec,
            emails=emails,
            priority=priority)
        self.path = path

    def get_pinball_condition(self, outputs):
        return ShellConditionJob(
            name=self.name,
            outputs=outputs,
            emails=self.emails,
            max_attempts=self.max_attempts,
            retry_delay_sec=self.retry_delay_sec,
            command='test -e %s' % self.path)
