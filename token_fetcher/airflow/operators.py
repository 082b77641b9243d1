"""MigratedJobOperator and MigratedConditionSensor: a Pinball job's legacy command, run
for the DagRun's scheduled time.

The command comes from the layout the task was built from (the spec's command template:
segments joined by the run's end_date), so a run bound to a layout runs that layout's
commands without asking the token fetcher again. end_date is Pinball's: the UTC date of
the run's scheduled time minus one day (docs/pinball-compatibility.md, "Schedules and the
handover"), where the scheduled time is the timetable's run time,
``data_interval_end`` (for the daily grid this is ``ds``; for others it is not).

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
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator, BaseSensorOperator
from airflow.sdk.exceptions import AirflowException

from legacy_parser.schedule import run_end_date
from token_fetcher.airflow.fast_setattr import FastTaskSetattr, set_own_attributes

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


class _LegacyCommand:
    """What jobs and conditions share: their arguments, rendering and running the legacy
    command. A mixin, not an operator class: each operator's own ``__init__`` takes the
    legacy command's arguments (so that Airflow sees them: defaults, recorded init
    arguments, ``partial``) and hands them to ``_init_legacy_command``. Airflow wraps
    every ``__init__`` of an operator class, and each wrapper merges the default
    arguments and params again (about 9 us per task); a job's task passes two wrappers,
    its own and BaseOperator's, not three."""

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

    def _init_legacy_command(
        self,
        operator_init: Callable[..., None],
        kwargs: dict[str, Any],
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
        **own: Any,
    ) -> None:
        """Run the base operator's ``operator_init(**kwargs)`` and keep the legacy
        command's arguments, then ``own`` (the operator's own attributes)."""
        if runner == "inpod":
            names = {"cluster": cluster, "workflow": workflow, "job": job}
            _add_pod_override(kwargs, kubernetes, fingerprint=fingerprint, **names)
        operator_init(**kwargs)
        if runner not in RUNNERS:
            raise ValueError(f"runner must be one of {', '.join(RUNNERS)}, got {runner!r}")
        set_own_attributes(
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
            **own,
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


class MigratedJobOperator(_LegacyCommand, FastTaskSetattr, BaseOperator):
    """Runs one Pinball job's legacy command for the DagRun's scheduled time.

    ``warn_timeout_seconds`` (Pinball's warn timeout) does not stop the job: when it passes,
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
        warn_timeout_seconds: int | None = None,
        warn_timeout_email: bool = False,
        job_emails: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        """The legacy command's arguments (see _LegacyCommand), then the warn
        timeout's three; the rest are BaseOperator's."""
        self._init_legacy_command(
            super().__init__,
            kwargs,
            cluster=cluster,
            workflow=workflow,
            job=job,
            fingerprint=fingerprint,
            command_segments=command_segments,
            runner=runner,
            cwd=cwd,
            env=env,
            kubernetes=kubernetes,
            job_emails=list(job_emails),
            warn_timeout_seconds=warn_timeout_seconds,
            warn_timeout_email=warn_timeout_email,
        )

    def execute(self, context: Any) -> None:
        command = self.command_for(context)
        if self.runner == "inpod":
            self._execute_in_pod(command, context)
            return
        timer = None
        if self.warn_timeout_seconds:
            timer = threading.Timer(self.warn_timeout_seconds, self._warn_timeout, args=(context,))
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
            warn_after=self.warn_timeout_seconds or None,
            on_warn=lambda: self._warn_timeout(context),
        )
        if not outcome.succeeded:
            raise AirflowException(f"{self.workflow}/{self.job}: command {outcome.describe()}")

    def _warn_timeout(self, context: Any) -> None:
        message = (
            f"token-fetcher: {self.cluster}/{self.workflow}/{self.job} has been running longer "
            f"than its warn timeout ({self.warn_timeout_seconds} s); it keeps running"
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


class MigratedConditionSensor(_LegacyCommand, FastTaskSetattr, BaseSensorOperator):
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
        """The legacy command's arguments (see _LegacyCommand); the rest are
        BaseSensorOperator's."""
        self._init_legacy_command(
            super().__init__,
            kwargs,
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
