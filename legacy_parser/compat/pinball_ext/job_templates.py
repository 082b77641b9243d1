"""Job and condition templates: they turn a definition into Pinball job payloads.

The job runner command line is byte-identical to what Pinball's code gives, with the
``k=v`` pairs in the definition's order (Python 2 Pinball joined them in its dict order;
``legacy_parser.equivalence`` compares the two). Where Pinball reads the
wall clock for ``end_date`` ("yesterday"), the shim writes the run's end-date
placeholder instead, so commands can be rendered for any run later without
running this code again.
"""

import abc

from pinball.workflow.job import ShellConditionJob, ShellJob

from legacy_parser.commands import END_DATE_MARKER, CommandFormatError
from legacy_parser.compat import definition_site


def _joined_pairs(mapping):
    return ",".join(f"{key}={value}" for key, value in mapping.items())


class JobTemplateBase(abc.ABC):
    def __init__(self, name, write_lock=None, max_attempts=1, emails=None, priority=None,
                 warn_timeout_sec=None, abort_timeout_sec=None):
        self.name = name
        self.write_lock = write_lock
        self._max_attempts = max_attempts
        self._emails = emails if emails is not None else []
        self.priority = priority
        self._warn_timeout_sec = warn_timeout_sec
        self._abort_timeout_sec = abort_timeout_sec
        self.definition_site = definition_site()

    def __eq__(self, other):
        return self.name == getattr(other, "name", None)

    def __hash__(self):
        return hash(f"name={self.name}")

    @abc.abstractmethod
    def get_pinball_job(self, inputs, outputs, params):
        """Return the ShellJob this template makes for the given inputs and outputs."""


class JobTemplate(JobTemplateBase):
    command_template = (
        "cd %(job_repo_dir)s && python -m pinball_ext.job.job_runner "
        "--job_import_dirs_config=%(job_import_dirs_config)s "
        "--job_class_name=%(job_class_name)s "
        '--job_params="%(job_params)s" '
        "%(executor_params)s"
        "%(executor_config)s"
        "%(runner_extra_params)s"
    )

    def __init__(self, name, executor=None, executor_config=None, write_lock=None,
                 max_attempts=1, emails=None, priority=None, warn_timeout_sec=None,
                 abort_timeout_sec=None):
        assert name, "name should be set."
        super().__init__(name=name, write_lock=write_lock, max_attempts=max_attempts,
                         emails=emails, priority=priority, warn_timeout_sec=warn_timeout_sec,
                         abort_timeout_sec=abort_timeout_sec)
        self._job_class_name = name
        self._executor = executor
        self._executor_config = executor_config

    def get_pinball_job(self, inputs, outputs, params):
        if params is None:
            # Pinball fails here too (TypeError), with a message that says nothing useful.
            raise TypeError(
                f"JobTemplate {self.name!r} got no parser params: Pinball builds the final job "
                "without them, so a final job cannot be a JobTemplate (use a CommandJobTemplate)"
            )
        for required in ("job_repo_dir", "job_import_dirs_config"):
            if required not in params:
                raise KeyError(
                    f"JobTemplate {self.name!r} needs the parser param {required!r}"
                )
        # A copy: Pinball mutated the shared parser params, which changes nothing visible
        # except leaking one job's end_date into the next.
        job_params = dict(params.get("job_params") or {})
        job_params["end_date"] = params.get("end_date", END_DATE_MARKER)

        executor_params = f"--executor={self._executor} " if self._executor else ""
        executor_config = ""
        if self._executor_config:
            executor_config = f'--executor_config="{_joined_pairs(self._executor_config)}" '
        runner_extra_params = f"--write_lock={self.write_lock} " if self.write_lock else ""

        command = self.command_template % {
            "job_repo_dir": params["job_repo_dir"],
            "job_import_dirs_config": params["job_import_dirs_config"],
            "job_class_name": self._job_class_name,
            "job_params": _joined_pairs(job_params),
            "executor_params": executor_params,
            "executor_config": executor_config,
            "runner_extra_params": runner_extra_params,
        }
        return ShellJob(name=self.name, inputs=inputs, outputs=outputs, command=command,
                        emails=self._emails, max_attempts=self._max_attempts,
                        warn_timeout_sec=self._warn_timeout_sec,
                        abort_timeout_sec=self._abort_timeout_sec)


class CommandJobTemplate(JobTemplateBase):
    def __init__(self, name, command, write_lock=None, max_attempts=None, emails=None,
                 priority=None, warn_timeout_sec=None, abort_timeout_sec=None):
        super().__init__(name, write_lock, max_attempts, emails, priority, warn_timeout_sec,
                         abort_timeout_sec)
        self._command = command

    def get_pinball_job(self, inputs, outputs, params=None):
        params = params if params else {}
        try:
            command = self._command % params
        except (KeyError, ValueError, TypeError) as error:
            raise CommandFormatError(self._command, params, error) from None
        max_attempts = self._max_attempts if self._max_attempts is not None else 1
        return ShellJob(name=self.name, inputs=inputs, outputs=outputs, emails=self._emails,
                        max_attempts=max_attempts, warn_timeout_sec=self._warn_timeout_sec,
                        abort_timeout_sec=self._abort_timeout_sec, command=command)


class ConditionTemplateBase(abc.ABC):
    def __init__(self, name, max_attempts=10, retry_delay_sec=5 * 60, emails=None,
                 priority=None):
        self.name = name
        self.max_attempts = max_attempts
        self.retry_delay_sec = retry_delay_sec
        self.emails = emails if emails is not None else []
        self.priority = priority
        self.definition_site = definition_site()

    def __eq__(self, other):
        return self.name == getattr(other, "name", None)

    def __hash__(self):
        return hash(f"name={self.name}")

    @abc.abstractmethod
    def get_pinball_condition(self, outputs):
        """Return the ShellConditionJob this template makes for the given outputs."""


class CommandConditionTemplate(ConditionTemplateBase):
    def __init__(self, name, max_attempts=72, retry_delay_sec=20 * 60, emails=None,
                 priority=None):
        super().__init__(name, max_attempts=max_attempts, retry_delay_sec=retry_delay_sec,
                         emails=emails, priority=priority)

    def get_pinball_condition(self, outputs, params=None):
        if not params or "command" not in params:
            raise KeyError(
                f"CommandConditionTemplate {self.name!r} needs template params with a "
                "'command'; Python definitions must subclass ConditionTemplateBase instead"
            )
        return ShellConditionJob(name=self.name, outputs=outputs, emails=self.emails,
                                 max_attempts=self.max_attempts,
                                 retry_delay_sec=self.retry_delay_sec,
                                 command=params["command"],
                                 cleanup_template=params.get("cleanup_template"))
