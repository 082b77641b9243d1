"""Templates for the JSON-defined workflows.

The JSON format builds a template as Template(job, max_attempts=..., emails=...,
priority=...) and formats its command with the job's template_params, so a
command template used there carries its command in the class.
"""

from pinball_ext.job_templates import CommandJobTemplate


class FixedCommandTemplate(CommandJobTemplate):
    COMMAND = 'true'

    def __init__(self, name, max_attempts=1, emails=None, priority=None):
        super(FixedCommandTemplate, self).__init__(
            name, self.COMMAND, max_attempts=max_attempts, emails=emails, priority=priority)


class SyncTablesTemplate(FixedCommandTemplate):
    """Needs template_params: warehouse."""

    COMMAND = 'echo "syncing tables into %(warehouse)s"'


class HeartbeatTemplate(FixedCommandTemplate):
    COMMAND = 'echo "heartbeat at $(date -u +%%H:%%M)"'
