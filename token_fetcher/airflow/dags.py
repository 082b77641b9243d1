"""A layout -> an Airflow DAG: one task per job (the final job and conditions
included), dependencies from the jobs' inputs and outputs, Pinball's retries, timeouts,
emails and priorities, the schedule grid and the overrun policy.

See docs/airflow.md for the mapping, field by field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG

from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.airflow.fast_edges import set_upstream
from token_fetcher.airflow.layouts import Layout, dag_id_problem, task_ids_problem
from token_fetcher.airflow.operators import MigratedConditionSensor, MigratedJobOperator
from token_fetcher.airflow.settings import Settings
from token_fetcher.airflow.timetable import PinballTimetable

__all__ = [
    "DYNAMIC_TAG",
    "OVERRUN_POLICIES",
    "STALE_TAG",
    "SharedArgs",
    "build_dag",
    "failure_emails",
    "overrun_arguments",
]

WORKFLOW_START = "__WORKFLOW_START__"
# A condition polls in reschedule mode (freeing its worker slot between pokes) when
# its retry delay is at least this long; shorter delays poke in place.
RESCHEDULE_MIN_SECONDS = 60

OVERRUN_POLICIES = {
    pb.OVERRUN_POLICY_SKIP: "SKIP",
    pb.OVERRUN_POLICY_ABORT_RUNNING: "ABORT_RUNNING",
    pb.OVERRUN_POLICY_DELAY: "DELAY",
    pb.OVERRUN_POLICY_DELAY_UNTIL_SUCCESS: "DELAY_UNTIL_SUCCESS",
    pb.OVERRUN_POLICY_START_NEW: "START_NEW",
    pb.OVERRUN_POLICY_UNSPECIFIED: "SKIP",
}


def overrun_arguments(schedule: pb.Schedule) -> dict[str, Any]:
    """The DAG arguments for the schedule's overrun policy.

    Pinball's policies decide whether a new workflow *instance* starts while earlier
    ones run or failed, so each maps to arguments of the DAG, never of its tasks: a
    per-task rule such as ``depends_on_past`` waits for the same task in the previous
    run, and a job added by a layout change has none, so its run would never finish.

    ==================== ==========================================================
    START_NEW            max_active_runs = max_running_instances
    DELAY                max_active_runs = 1
    DELAY_UNTIL_SUCCESS  max_active_runs = 1, max_consecutive_failed_dag_runs = 1
                         (a failed run pauses the DAG: no new run starts until it
                         is re-run or marked successful and the DAG unpaused)
    ABORT_RUNNING        max_active_runs = 1, dagrun_timeout = recurrence
    SKIP (and unset)     max_active_runs = 1 (a late run waits instead of being
                         skipped: no grid point after the handover is ever dropped)
    ==================== ==========================================================
    """
    policy = schedule.overrun_policy
    dag_args: dict[str, Any] = {"max_active_runs": 1}
    if policy == pb.OVERRUN_POLICY_START_NEW:
        dag_args["max_active_runs"] = max(1, schedule.max_running_instances or 1)
    elif policy == pb.OVERRUN_POLICY_DELAY_UNTIL_SUCCESS:
        dag_args["max_consecutive_failed_dag_runs"] = 1
    elif policy == pb.OVERRUN_POLICY_ABORT_RUNNING:
        dag_args["dagrun_timeout"] = timedelta(seconds=schedule.recurrence_seconds)
    return dag_args


def failure_emails(emails: Sequence[str], shared: SharedArgs | None = None) -> dict[str, Any]:
    """Task arguments that email ``emails`` when the task fails (not on retries).

    Airflow 3 deprecates a task's ``email``/``email_on_failure`` for notifiers: with the
    SMTP provider (installed with apache-airflow) this is an ``SmtpNotifier`` failure
    callback, which uses the ``[email] email_conn_id`` connection; without it, the
    deprecated arguments. With ``shared`` (one per parse), every task and DAG of the
    parse with the same addresses gets the same notifier.
    """
    if not emails:
        return {}
    notifier = (shared or SharedArgs()).notifier(emails)
    if notifier is None:
        return {"email": list(emails), "email_on_failure": True, "email_on_retry": False}
    return {"on_failure_callback": [notifier]}


def _dag_failure_emails(emails: list[str], shared: SharedArgs) -> dict[str, Any]:
    # Pinball tells the workflow's notify_emails when a run fails.
    callback = failure_emails(emails, shared).get("on_failure_callback")
    return {"on_failure_callback": callback} if callback else {}


_UNSET = object()


def _shared_notifier_class() -> Any:
    try:
        from token_fetcher.airflow.notifiers import SharedSmtpNotifier
    except ImportError:  # no SMTP provider
        return None
    return SharedSmtpNotifier


class SharedArgs:
    """What the DAGs built in one parse share: one failure notifier per distinct list
    of addresses (building an SmtpNotifier reads Airflow's config), and the DAG
    arguments Airflow would otherwise read from its config once per DAG."""

    def __init__(self) -> None:
        self._notifiers: dict[tuple[str, ...], Any] = {}
        self._notifier_class: Any = _UNSET
        self._dag_defaults: dict[str, Any] | None = None

    def notifier(self, emails: Sequence[str]) -> Any:
        """The failure notifier of ``emails``, or None without the SMTP provider."""
        key = tuple(emails)
        try:
            return self._notifiers[key]
        except KeyError:
            pass
        if self._notifier_class is _UNSET:
            self._notifier_class = _shared_notifier_class()
        cls = self._notifier_class
        notifier = self._notifiers[key] = cls(to=list(key)) if cls is not None else None
        return notifier

    def dag_defaults(self) -> dict[str, Any]:
        """DAG arguments whose defaults come from Airflow's config, read once: the values
        the DAG would read itself, so a DAG is the same with or without them."""
        if self._dag_defaults is None:
            try:
                from airflow.sdk.configuration import conf

                self._dag_defaults = {
                    "max_active_tasks": conf.getint("core", "max_active_tasks_per_dag"),
                    "max_consecutive_failed_dag_runs": conf.getint(
                        "core", "max_consecutive_failed_dag_runs_per_dag"
                    ),
                    "disable_bundle_versioning": conf.getboolean(
                        "dag_processor", "disable_bundle_versioning"
                    ),
                }
            except Exception:  # another Airflow: let the DAG read its own defaults
                self._dag_defaults = {}
        return self._dag_defaults


def _priority_weight(score: float) -> int:
    # Airflow's weights are integers; Pinball's scores are floats (5.5 and the like).
    return max(1, math.ceil(score))


STALE_TAG = "token-fetcher:stale"
DYNAMIC_TAG = "token-fetcher:dynamic"


def _banner(layout: Layout) -> list[str]:
    """Warnings at the top of the DAG's docs (Airflow 3.3 stores no DAG warning of a
    DAG's own; its only kinds are pools, asset conflicts and runtime-varying values)."""
    lines = []
    if layout.definition_errors:
        lines += [
            "> **Stale:** the latest definition of this workflow fails to parse; this DAG "
            "runs its last good layout until the definition is fixed.",
            ">",
            *(f"> - {error}" for error in layout.definition_errors),
            "",
        ]
    if layout.dynamic:
        lines += [
            "> **Dynamic:** this workflow's layout changed between parses while none of the "
            "files its parse read changed (it depends on the clock, randomness or outside "
            "data); the newest layout is served, so runs may differ without any edit.",
            "",
        ]
    return lines


def _tags(layout: Layout) -> list[str]:
    tags = ["pinball", "token-fetcher", f"cluster:{layout.cluster}"]
    if layout.definition_errors:
        tags.append(STALE_TAG)
    if layout.dynamic:
        tags.append(DYNAMIC_TAG)
    return tags


def _doc(layout: Layout, timetable: PinballTimetable) -> str:
    spec = layout.spec
    # No source lines: they are not part of the layout (nor of the bundle version), and a
    # line shift must not make a new DAG version.
    lines = [
        *_banner(layout),
        f"Migrated Pinball workflow **{layout.cluster}/{layout.workflow}** (token-fetcher).",
        "",
        f"- layout fingerprint: `{layout.fingerprint}`",
        f"- definition file: `{spec.source.file}`" if spec.source.file else "",
        f"- migration metadata: `{layout.metadata.path}`" if layout.metadata.path else "",
        f"- migration date: {layout.metadata.migration_date.isoformat()}",
        f"- first Airflow run: {timetable.first_run_datetime.isoformat()}",
        f"- overrun policy: {OVERRUN_POLICIES.get(spec.schedule.overrun_policy, 'SKIP')}",
        f"- notify emails: {', '.join(spec.notify_emails) or '-'}",
    ]
    return "\n".join(line for line in lines if line != "") + "\n"


def build_dag(layout: Layout, settings: Settings, shared: SharedArgs | None = None) -> DAG:
    """The DAG of one migrated workflow. Raises ValueError for a layout Airflow cannot
    take (a job name that is not a valid task id). ``shared``: what the DAGs of one parse
    share (see SharedArgs); a new one when not given."""
    shared = shared or SharedArgs()
    spec = layout.spec
    problem = dag_id_problem(layout.dag_id) or task_ids_problem(spec)
    if problem:
        raise ValueError(problem)
    schedule = spec.schedule
    timetable = PinballTimetable(
        schedule.reference_time.seconds, schedule.recurrence_seconds, layout.handover.first_new_run,
        stop_after=layout.metadata.rollback_epoch,
    )
    dag_args = overrun_arguments(schedule)
    kube = settings.kubernetes
    kubernetes = {
        "image": kube.image,
        "namespace": kube.namespace,
        "service_account": kube.service_account,
        "resources": kube.resources(),
        "working_dir": kube.working_dir,
        "image_pull_policy": kube.image_pull_policy,
        "conn_id": kube.conn_id,
        "in_cluster": kube.in_cluster,
    }
    dag = DAG(
        dag_id=layout.dag_id,
        schedule=timetable,
        # The first run's data interval starts one recurrence before its run time, and
        # Airflow creates no task instance for a run whose logical date (the interval's
        # start) is before the tasks' start_date.
        start_date=timetable.first_run_datetime - timedelta(seconds=timetable.recurrence),
        catchup=True,
        description=(
            f"Pinball {layout.cluster}/{layout.workflow} (layout {layout.fingerprint[:12]})"
        ),
        doc_md=_doc(layout, timetable),
        tags=_tags(layout),
        **_dag_failure_emails(list(spec.notify_emails), shared),
        default_args={"owner": "pinball"},
        **{**shared.dag_defaults(), **dag_args},
    )
    names = {job.name for job in spec.jobs}
    tasks: dict[str, Any] = {}
    for job in spec.jobs:
        common: dict[str, Any] = {
            "task_id": job.name,
            "dag": dag,
            "cluster": layout.cluster,
            "workflow": layout.workflow,
            "job": job.name,
            "fingerprint": layout.fingerprint,
            "command_segments": job.command.segments,  # the operator keeps a list copy
            "runner": settings.mode,
            "cwd": settings.job_cwd,
            "kubernetes": kubernetes,
            "priority_weight": _priority_weight(job.score),
            "weight_rule": "absolute",
            **failure_emails(job.emails, shared),
            "doc_md": _job_doc(job),
        }
        if job.kind == pb.JOB_KIND_CONDITION:
            tasks[job.name] = _condition(job, common, settings)
        else:
            tasks[job.name] = _job(job, common, settings)
    # Each edge once, from the child's side (fast_edges: without hashing the DAG per
    # task). A job's outputs mirror its children's inputs: an output no job waits for
    # carries no dependency in Pinball either.
    for job in spec.jobs:
        parents = set(job.inputs).union(job.parents)
        parents.discard(WORKFLOW_START)
        parents &= names
        if parents:
            set_upstream(tasks[job.name], [tasks[parent] for parent in sorted(parents)])
    return dag


def _job(job: pb.JobSpec, common: dict[str, Any], settings: Settings) -> MigratedJobOperator:
    abort = job.abort_timeout_seconds if job.HasField("abort_timeout_seconds") else None
    warn = job.warn_timeout_seconds if job.HasField("warn_timeout_seconds") else None
    return MigratedJobOperator(
        retries=max(0, job.max_attempts - 1),
        retry_delay=timedelta(seconds=max(0, job.retry_delay_seconds)),
        execution_timeout=timedelta(seconds=abort) if abort else None,
        warn_timeout_seconds=warn or None,
        warn_timeout_email=settings.warn_timeout_email,
        job_emails=list(job.emails),
        **common,
    )


def _condition(
    job: pb.JobSpec, common: dict[str, Any], settings: Settings
) -> MigratedConditionSensor:
    delay = max(1, job.retry_delay_seconds)
    attempts = max(1, job.max_attempts)
    mode = settings.poke_mode
    if mode == "auto":
        mode = "reschedule" if delay >= RESCHEDULE_MIN_SECONDS else "poke"
    return MigratedConditionSensor(
        poke_interval=delay,
        timeout=attempts * delay,
        mode=mode,
        retries=0,
        **common,
    )


def _job_doc(job: pb.JobSpec) -> str:
    kind = "condition" if job.kind == pb.JOB_KIND_CONDITION else "job"
    return f"Pinball {kind} `{job.name}` ({job.template or job.template_name})"
