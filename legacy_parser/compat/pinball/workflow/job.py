"""The job payloads templates build: plain attribute holders, as in Pinball."""

from pinball.workflow.name import Name


class Job:
    IS_CONDITION = False

    def __init__(self, name=None, inputs=None, outputs=None, emails=None, max_attempts=1,
                 retry_delay_sec=0, warn_timeout_sec=None, abort_timeout_sec=None):
        self.name = name
        self.inputs = inputs if inputs is not None else []
        self.outputs = outputs if outputs is not None else []
        self.emails = emails if emails is not None else []
        self.max_attempts = max_attempts
        self.retry_delay_sec = retry_delay_sec
        self.warn_timeout_sec = warn_timeout_sec
        self.abort_timeout_sec = abort_timeout_sec
        self.disabled = False
        self.history = []
        self.events = []


class ShellJob(Job):
    def __init__(self, name=None, inputs=None, outputs=None, emails=None, max_attempts=1,
                 retry_delay_sec=0, warn_timeout_sec=None, abort_timeout_sec=None,
                 command=None, cleanup_template=None):
        super().__init__(name, inputs, outputs, emails, max_attempts, retry_delay_sec,
                         warn_timeout_sec, abort_timeout_sec)
        self.command = command
        self.cleanup_template = cleanup_template


class ShellConditionJob(ShellJob):
    IS_CONDITION = True

    def __init__(self, name=None, outputs=None, emails=None, max_attempts=10,
                 retry_delay_sec=5 * 60, warn_timeout_sec=None, abort_timeout_sec=None,
                 command=None, cleanup_template=None):
        super().__init__(name=name, inputs=[Name.WORKFLOW_START_INPUT], outputs=outputs,
                         emails=emails, max_attempts=max_attempts,
                         retry_delay_sec=retry_delay_sec, warn_timeout_sec=warn_timeout_sec,
                         abort_timeout_sec=abort_timeout_sec, command=command,
                         cleanup_template=cleanup_template)
