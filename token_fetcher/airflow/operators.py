"""MigratedJobOperator and MigratedConditionSensor: a Pinball job's legacy command, run
for the DagRun's scheduled time.

The command comes from the layout the task was built from (the spec's command template:
segments joined by the run's end_date), so a run bound to a layout runs that layout's
commands without asking the token fetcher again. end_date is Pinball's: the UTC date of
the run's scheduled time minus one day (PINBALL_FORMAT section 5), where the scheduled
time is the timetable's run time, ``data_interval_end`` (for the daily grid this is
``ds``; for others it is not).

Two modes: ``local`` runs ``bash -c <command>`` in a subprocess (working directory: the
legacy repo root), streaming its output line by line to the task log; the exit code
decides. ``kubernetes`` runs the command in a pod of the legacy image through the
cncf-kubernetes provider (see ``token_fetcher.airflow.kubernetes``). ``inpod`` hands it
to the legacy container of the task's own worker pod (see ``token_fetcher.airflow.inpod``).
"""

from __future__ import annotations

import calendar
import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator, BaseSensorOperator
from airflow.sdk.exceptions import AirflowException

from legacy_parser.schedule import run_end_date

__all__ = [
    "MigratedConditionSensor",
    "MigratedJobOperator",
    "RUNNERS",
    "render_command",
    "scheduled_run_time",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RUNNERS = ("local", "kubernetes", "inpod")


def scheduled_run_time(context: Mapping[str, Any]) -> datetime:
    """The run's scheduled time (the Pinball grid point) from a task context: the data
    interval's end, or the run's ``run_after`` for a run without a data interval;
    whole UTC seconds."""
    value = context.get("data_interval_end")
    if value is None:
        dag_run = context.get("dag_run")
        value = getattr(dag_run, "run_after", None)
    if value is None:
        raise AirflowException("the task context has neither data_interval_end nor run_after")
    # timegm(utctimetuple()): whole seconds, rounded down, naive meaning UTC; also right
    # for pendulum DateTimes, whose differences do not divide by a timedelta.
    return _EPOCH + timedelta(seconds=calendar.timegm(value.utctimetuple()))


def end_date_for(run_time: datetime) -> str:
    """Pinball's end_date for a run at ``run_time``: its UTC date minus one day."""
    return run_end_date(calendar.timegm(run_time.utctimetuple()))


def render_command(segments: Sequence[str], end_date: str) -> str:
    """The command for a run: the template's segments joined by the run's end_date."""
    return end_date.join(segments)


def _add_pod_override(
    kwargs: dict[str, Any], options: Mapping[str, Any] | None, **job: str
) -> None:
    """The inpod mode's ``executor_config``: the task's pod override (unless given)."""
    if "executor_config" not in kwargs:
        from token_fetcher.airflow.inpod import executor_config

        kwargs["executor_config"] = executor_config(options or {}, **job)


def _set_own_attributes(task: Any, **values: Any) -> None:
    """Set attributes of our own on a task being built, past ``BaseOperator.__setattr__``.

    That hook converts Airflow's own arguments (``retries``, ``retry_delay``, ...), keeps
    the recorded init arguments in step and re-resolves XComArg dependencies of template
    fields set after ``__init__``. None of it applies here: these names have no
    converter, the init arguments are recorded after ``__init__`` returns, and the task
    is not instantiated yet. The hook's name lookups cost about 1 us per attribute,
    for every attribute of every task of every parse.
    """
    for name, value in values.items():
        object.__setattr__(task, name, value)


# BaseOperator.__setattr__ as the fast path below was written against (Airflow 3.3):
#
#     if converter := getattr(self, f"_convert_{key}", None):
#         value = converter(value)
#     super().__setattr__(key, value)
#     if self.__from_mapped or self._lock_for_execution:
#         return
#     if key in self.__init_kwargs:
#         self.__init_kwargs[key] = value
#     if self.__instantiated and key in self.template_fields:
#         self._set_xcomargs_dependency(key, value)
_SETATTR_NAMES = (
    "getattr",
    "super",
    "__setattr__",
    "_BaseOperator__from_mapped",
    "_lock_for_execution",
    "_BaseOperator__init_kwargs",
    "_BaseOperator__instantiated",
    "template_fields",
    "_set_xcomargs_dependency",
)
_CONVERTER_PREFIX = "_convert_"
# Per task class: the attribute names the fast path leaves to Airflow's hook, or None
# for no fast path.
_converted_names: dict[type, frozenset[str] | None] = {}


def _converted(cls: type) -> frozenset[str] | None:
    """The attribute names of ``cls`` that need more than a store in the instance
    dict (Airflow converts them, or a property or other data descriptor sets them), when
    the fast path of ``_LegacyCommandMixin.__setattr__`` is valid for ``cls``; else None.

    Valid when Airflow's hook is the one above (same names and constants: a changed hook
    turns the fast path off, never wrong) and no other class in ``cls``'s MRO defines
    ``__setattr__``.
    """
    try:
        return _converted_names[cls]
    except KeyError:
        pass
    result: frozenset[str] | None = None
    hook = BaseOperator.__dict__.get("__setattr__")
    code = getattr(hook, "__code__", None)
    hooks = [
        klass
        for klass in cls.__mro__
        if "__setattr__" in klass.__dict__ and klass is not _LegacyCommandMixin
    ]
    if (
        code is not None
        and code.co_names == _SETATTR_NAMES
        and _CONVERTER_PREFIX in code.co_consts
        and hooks == [BaseOperator, object]
        and all(
            name in BaseOperator.__dict__
            for name in ("_BaseOperator__instantiated", "_BaseOperator__from_mapped")
        )
        and BaseOperator.__dict__.get("_lock_for_execution") is False
    ):
        prefix = len(_CONVERTER_PREFIX)
        converted = {name[prefix:] for name in dir(cls) if name.startswith(_CONVERTER_PREFIX)}
        descriptors = {
            name
            for klass in cls.__mro__
            for name, attribute in vars(klass).items()
            if hasattr(type(attribute), "__set__") or hasattr(type(attribute), "__delete__")
        }
        result = frozenset(converted | descriptors)
    _converted_names[cls] = result
    return result


class _LegacyCommandMixin:
    """What jobs and conditions share: rendering and running the legacy command."""

    def __setattr__(self, key: str, value: Any) -> None:
        """``BaseOperator.__setattr__``, faster for a task under construction.

        ``BaseOperator.__init__`` sets some 60 attributes per task through Airflow's
        hook, which looks up a converter by name and calls ``super()`` for each: about a
        third of the time Airflow takes to build a task, and so of a parse of thousands
        of tasks. While a task is being built (not instantiated, not mapped, not locked
        for execution), an attribute without a converter only needs what the hook does
        then: set it, and keep the recorded init argument of that name in step. Every
        other case, and any Airflow whose hook is not the one ``_converted`` checks for,
        goes through Airflow's hook.
        """
        state = self.__dict__
        init_kwargs = state.get("_BaseOperator__init_kwargs")
        try:
            converted = _converted_names[type(self)]
        except KeyError:
            converted = _converted(type(self))
        if (
            converted is None
            or init_kwargs is None
            or key in converted
            or state.get("_BaseOperator__instantiated")
            or state.get("_BaseOperator__from_mapped")
            or state.get("_lock_for_execution")
        ):
            super().__setattr__(key, value)
            return
        state[key] = value  # neither converted nor a data descriptor: see _converted
        if key in init_kwargs:
            init_kwargs[key] = value

    cluster: str
    workflow: str
    job: str
    fingerprint: str
    command_segments: list[str]
    runner: str
    cwd: str
    env: dict[str, str] | None
    kubernetes: dict[str, Any]
    log: Any
    task_id: str
    _process: subprocess.Popen[str] | None

    def _init_command(
        self,
        *,
        cluster: str,
        workflow: str,
        job: str,
        fingerprint: str,
        command_segments: Sequence[str],
        runner: str,
        cwd: str,
        env: Mapping[str, str] | None,
        kubernetes: Mapping[str, Any] | None,
    ) -> None:
        if runner not in RUNNERS:
            raise ValueError(f"runner must be one of {', '.join(RUNNERS)}, got {runner!r}")
        _set_own_attributes(
            self,
            cluster=cluster,
            workflow=workflow,
            job=job,
            fingerprint=fingerprint,
            command_segments=list(command_segments),
            runner=runner,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            kubernetes=dict(kubernetes or {}),
            _process=None,
        )

    def command_for(self, context: Mapping[str, Any]) -> str:
        run_time = scheduled_run_time(context)
        return render_command(self.command_segments, end_date_for(run_time))

    # --- local mode ---

    def _run_local(self, command: str) -> int:
        """Run ``bash -c command``, log its output line by line, return its exit code."""
        env = None
        if self.env:
            env = {**os.environ, **self.env}
        self.log.info("Running in %s: %s", self.cwd or os.getcwd(), command)
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=self.cwd or None,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            # Its own process group, so a timeout or a kill stops its children too.
            start_new_session=True,
        )
        self._process = process
        try:
            assert process.stdout is not None
            for line in process.stdout:
                self.log.info("%s", line.rstrip("\n"))
            return process.wait()
        finally:
            # Reached with the process still running when the task is timed out or
            # killed (an exception out of the loop): stop the whole group.
            self._stop_process()

    def on_kill(self) -> None:
        self._stop_process()
        if self.runner == "inpod":
            from token_fetcher.airflow.inpod import cancel_in_pod

            cancel_in_pod(self)

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    # --- kubernetes mode ---

    def build_pod(self, command: str, run_id: str = "") -> Any:
        from token_fetcher.airflow.kubernetes import build_pod

        options = self.kubernetes
        return build_pod(
            cluster=self.cluster,
            workflow=self.workflow,
            job=self.job,
            command=command,
            image=options.get("image", ""),
            namespace=options.get("namespace") or "default",
            resources=options.get("resources"),
            working_dir=options.get("working_dir", ""),
            env=self.env,
            service_account=options.get("service_account", ""),
            image_pull_policy=options.get("image_pull_policy") or "IfNotPresent",
            fingerprint=self.fingerprint,
            run_id=run_id,
        )

    def _run_pod(self, command: str, context: Mapping[str, Any]) -> None:
        from token_fetcher.airflow.kubernetes import run_pod

        pod = self.build_pod(command, run_id=str(context.get("run_id", "")))
        run_pod(
            pod,
            context,
            task_id=self.task_id,
            conn_id=self.kubernetes.get("conn_id", ""),
            in_cluster=self.kubernetes.get("in_cluster"),
        )


class MigratedJobOperator(_LegacyCommandMixin, BaseOperator):
    """Runs one Pinball job's legacy command for the DagRun's scheduled time.

    ``warn_timeout_sec`` (Pinball's warn timeout) does not stop the job: when it passes,
    a warning goes to the task log and, with ``warn_timeout_email``, an email to
    ``job_emails`` (the job's Pinball emails) through the SMTP provider's notifier.
    The abort timeout is the task's ``execution_timeout``.
    """

    # The legacy command is not a Jinja template (it may contain "{{"); the fingerprint
    # is a template field only so that it is part of the serialized DAG: a new layout
    # then always makes a new DAG version, even when only a command changed.
    template_fields: Sequence[str] = ("fingerprint",)
    ui_color = "#dbe9f6"

    def __init__(
        self,
        *,
        cluster: str,
        workflow: str,
        job: str,
        fingerprint: str,
        command_segments: Sequence[str],
        runner: str = "local",
        cwd: str = "",
        env: Mapping[str, str] | None = None,
        kubernetes: Mapping[str, Any] | None = None,
        warn_timeout_sec: int | None = None,
        warn_timeout_email: bool = False,
        job_emails: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        if runner == "inpod":
            names = {"cluster": cluster, "workflow": workflow, "job": job}
            _add_pod_override(kwargs, kubernetes, fingerprint=fingerprint, **names)
        super().__init__(**kwargs)
        _set_own_attributes(
            self,
            job_emails=list(job_emails),
            warn_timeout_sec=warn_timeout_sec,
            warn_timeout_email=warn_timeout_email,
        )
        self._init_command(
            cluster=cluster,
            workflow=workflow,
            job=job,
            fingerprint=fingerprint,
            command_segments=command_segments,
            runner=runner,
            cwd=cwd,
            env=env,
            kubernetes=kubernetes,
        )

    def execute(self, context: Any) -> None:
        command = self.command_for(context)
        if self.runner == "inpod":
            self._execute_in_pod(command, context)
            return
        timer = None
        if self.warn_timeout_sec:
            timer = threading.Timer(self.warn_timeout_sec, self._warn_timeout, args=(context,))
            timer.daemon = True
            timer.start()
        try:
            if self.runner == "kubernetes":
                self._run_pod(command, context)
                return
            code = self._run_local(command)
            if code != 0:
                raise AirflowException(f"{self.workflow}/{self.job}: command exited {code}")
            self.log.info("%s/%s: command exited 0", self.workflow, self.job)
        finally:
            if timer is not None:
                timer.cancel()

    def _execute_in_pod(self, command: str, context: Any) -> None:
        from token_fetcher.airflow.inpod import run_in_pod

        outcome = run_in_pod(
            self,
            command,
            context,
            warn_after=self.warn_timeout_sec or None,
            on_warn=lambda: self._warn_timeout(context),
        )
        if not outcome.succeeded:
            raise AirflowException(f"{self.workflow}/{self.job}: command {outcome.describe()}")

    def _warn_timeout(self, context: Any) -> None:
        message = (
            f"token-fetcher: {self.cluster}/{self.workflow}/{self.job} has been running longer "
            f"than its warn timeout ({self.warn_timeout_sec} s); it keeps running"
        )
        self.log.warning("%s", message)
        if not (self.warn_timeout_email and self.job_emails):
            return
        try:
            from airflow.providers.smtp.notifications.smtp import SmtpNotifier

            SmtpNotifier(
                to=self.job_emails,
                subject=f"[airflow] warn timeout: {self.dag_id}.{self.task_id}",
                html_content=f"<p>{message}</p><p>run: {context.get('run_id', '')}</p>",
            ).notify(context)
        except Exception:  # a notification must never fail the job
            self.log.exception("token-fetcher: could not send the warn-timeout email")


class MigratedConditionSensor(_LegacyCommandMixin, BaseSensorOperator):
    """A Pinball condition: pokes its command every ``poke_interval`` (the condition's
    retry delay) until it exits 0, for at most ``timeout`` (attempts x retry delay)."""

    template_fields: Sequence[str] = ("fingerprint",)
    ui_color = "#f5e6c8"

    def __init__(
        self,
        *,
        cluster: str,
        workflow: str,
        job: str,
        fingerprint: str,
        command_segments: Sequence[str],
        runner: str = "local",
        cwd: str = "",
        env: Mapping[str, str] | None = None,
        kubernetes: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if runner == "inpod":
            names = {"cluster": cluster, "workflow": workflow, "job": job}
            _add_pod_override(kwargs, kubernetes, fingerprint=fingerprint, **names)
        super().__init__(**kwargs)
        self._init_command(
            cluster=cluster,
            workflow=workflow,
            job=job,
            fingerprint=fingerprint,
            command_segments=command_segments,
            runner=runner,
            cwd=cwd,
            env=env,
            kubernetes=kubernetes,
        )

    def poke(self, context: Any) -> bool:
        command = self.command_for(context)
        if self.runner == "inpod":
            from token_fetcher.airflow.inpod import run_in_pod

            outcome = run_in_pod(self, command, context)
            if outcome.outcome != "exited":
                raise AirflowException(f"{self.workflow}/{self.job}: {outcome.describe()}")
            self.log.info("condition %s: %s", "met" if outcome.succeeded else "not met",
                          outcome.describe())
            return outcome.succeeded
        if self.runner == "kubernetes":
            try:
                self._run_pod(command, context)
            except AirflowException as exc:
                self.log.info("condition not met: %s", exc)
                return False
            return True
        code = self._run_local(command)
        self.log.info("condition %s: command exited %d", "met" if code == 0 else "not met", code)
        return code == 0
