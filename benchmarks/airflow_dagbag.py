"""Airflow's own DagBag: the token-fetcher loader vs the same DAGs as native files.

Runs under an interpreter that has Airflow (the running venv, or ``--airflow-python``
of ``benchmarks.run``):

    python -m benchmarks.airflow_dagbag write-native --target T --cluster C --out DIR
    python -m benchmarks.airflow_dagbag write-loader --cluster C --workflows-file F --out DIR
                                                 [--files N]  # N loader files, one share each
    python -m benchmarks.airflow_dagbag dagbag --dags DIR [--file NAME]  # one JSON line

Airflow's settings come from the environment the caller sets (AIRFLOW_HOME,
AIRFLOW__CORE__DAGS_FOLDER, AIRFLOW__TOKEN_FETCHER__TARGET, ...).

A native file is what a hand migration would write for one workflow: a DAG with one
BashOperator per job carrying the job's command (end_date as a template), retries,
priority weight and dependencies, on a timedelta schedule, and the failure emails the
loader's DAGs send (the workflow's on the DAG, a job's on its task), written as Airflow 3
asks: one ``SmtpNotifier`` per distinct list of addresses in the file. Not the deprecated
``email`` task argument: Airflow warns for it on every task, three warnings a file that
the loader's DAGs never pay (and it would mail on retries too, which Pinball did not).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

from benchmarks.peak_rss import peak_rss_bytes

NATIVE_HEADER = '''"""Hand-migrated Pinball workflow {cluster}/{workflow} (generated)."""
from datetime import datetime, timedelta, timezone

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

{notifiers}
with DAG(
    dag_id={dag_id!r},
    schedule=timedelta(seconds={recurrence}),
    start_date=datetime.fromtimestamp({start}, tz=timezone.utc),
    catchup=False,
    max_active_runs={max_active_runs},
    default_args={{"owner": "pinball-migration"}},{dag_failure}
    tags=["pinball", {cluster!r}],
) as dag:
'''


def write_native(target: str, cluster: str, out: Path) -> int:
    from token_fetcher.client import TokenFetcherClient

    out.mkdir(parents=True, exist_ok=True)
    count = 0
    with TokenFetcherClient(target, timeout=120) as client:
        names = [w.name for w in client.list_workflows(cluster, page_size=1000).workflows]
        for name in names:
            spec = client.get_spec(cluster, name).spec
            (out / f"{name}.py").write_text(native_file_text(cluster, name, spec))
            count += 1
    return count


def native_file_text(cluster: str, name: str, spec) -> str:
    """The hand-migrated DAG file of one workflow spec."""
    notifiers: dict[tuple[str, ...], str] = {}
    for emails in [tuple(spec.notify_emails), *(tuple(job.emails) for job in spec.jobs)]:
        if emails and emails not in notifiers:
            notifiers[emails] = f"notify{len(notifiers)}"

    def on_failure(emails, before: str, after: str = "") -> str:
        return f"{before}on_failure_callback={notifiers[tuple(emails)]}{after}" if emails else ""

    schedule = spec.schedule
    lines = [NATIVE_HEADER.format(
        cluster=cluster, workflow=name, dag_id=f"native__{cluster}__{name}",
        recurrence=schedule.recurrence_seconds, start=schedule.reference_time.seconds,
        max_active_runs=max(1, schedule.max_running_instances or 1),
        notifiers="".join(f"{variable} = SmtpNotifier(to={list(emails)!r})\n"
                          for emails, variable in notifiers.items()),
        dag_failure=on_failure(spec.notify_emails, "\n    ", ","))]
    variables = {}
    for index, job in enumerate(spec.jobs):
        variable = f"t{index}"
        variables[job.name] = variable
        command = "{{ macros.ds_add(ds, 0) }}".join(job.command.segments)
        # Jinja would read a trailing ".sh"; the commands here end in a space.
        lines.append(
            f"    {variable} = BashOperator(task_id={job.name!r}, "
            f"bash_command={command!r}, retries={max(0, job.max_attempts - 1)}, "
            f"retry_delay=timedelta(seconds={job.retry_delay_seconds}), "
            f"priority_weight={max(1, int(job.score))}{on_failure(job.emails, ', ')})")
    for job in spec.jobs:
        for child in job.children:
            lines.append(f"    {variables[job.name]} >> {variables[child]}")
    return "\n".join(lines) + "\n"


def write_loader(cluster: str, workflows: list[str], out: Path, migration_date: str,
                 files: int = 1) -> int:
    from token_fetcher.airflow import loader_files

    out.mkdir(parents=True, exist_ok=True)
    for name, text in loader_files(files).items():
        (out / name).write_text(text)
    migrations = out / "migrations" / cluster
    migrations.mkdir(parents=True, exist_ok=True)
    for name in workflows:
        (migrations / f"{name}.json").write_text(json.dumps(
            {"cluster_name": cluster, "workflow_name": name, "migration_date": migration_date}))
    return len(workflows)


def dagbag(dags: Path) -> dict:
    """Airflow's DagBag over ``dags``: a folder, or one file of it."""
    started = time.perf_counter()
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 2
        from airflow.models.dagbag import DagBag
    # What a parse process of Airflow's DAG processor starts with on Linux: it is forked
    # from the processor's manager, which froze its heap (gc.freeze) to keep it shared.
    gc.freeze()
    imported = time.perf_counter()
    bag = DagBag(dag_folder=str(dags), safe_mode=False)
    done = time.perf_counter()
    tasks = sum(len(dag.tasks) for dag in bag.dags.values())
    return {"dagbag_seconds": done - imported, "import_airflow_seconds": imported - started,
            "dags": len(bag.dags), "tasks": tasks,
            "import_errors": {k: str(v)[-300:] for k, v in list(bag.import_errors.items())[:5]},
            "import_error_count": len(bag.import_errors),
            "max_rss": peak_rss_bytes()}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    native = sub.add_parser("write-native")
    native.add_argument("--target", required=True)
    native.add_argument("--cluster", required=True)
    native.add_argument("--out", required=True)
    loader = sub.add_parser("write-loader")
    loader.add_argument("--cluster", required=True)
    loader.add_argument("--workflows-file", required=True)
    loader.add_argument("--out", required=True)
    loader.add_argument("--migration-date", default="2024-01-01 00:00:00")
    loader.add_argument("--files", type=int, default=1)
    bag = sub.add_parser("dagbag")
    bag.add_argument("--dags", required=True)
    bag.add_argument("--file", help="parse only this file of the folder")
    args = parser.parse_args()
    if args.command == "write-native":
        print(json.dumps({"written": write_native(args.target, args.cluster, Path(args.out))}))
    elif args.command == "write-loader":
        names = json.loads(Path(args.workflows_file).read_text())
        print(json.dumps({"written": write_loader(args.cluster, names, Path(args.out),
                                                  args.migration_date, args.files)}))
    else:
        result = dagbag(Path(args.dags) / args.file if args.file else Path(args.dags))
        sys.stdout.flush()
        print(json.dumps(result))
        sys.stdout.flush()
        os._exit(0)  # skip Airflow's teardown; the numbers are out


if __name__ == "__main__":
    main()
