"""A synthetic legacy Pinball repo at Pinterest scale, in either definition format.

    python -m benchmarks.corpus --workflows 3000 --format python --out /tmp/corpus --seed 1

Deterministic for a seed: the same flags write the same bytes.

Shape (defaults): 3,000 workflows and about 15 jobs per workflow on average (about
45,000 jobs), job counts from 1 to 200 with a long tail (log-normal, clamped), and two
fixed workflows the benchmarks address by name: ``bench_w20`` (20 jobs) and
``bench_w200`` (200 jobs). Each workflow is a layered DAG: a job depends on one job of
the layer before it, sometimes on more (fan-in), and parents are picked with
preferential attachment, so a few jobs get many children (fan-out).

Python format (PyWorkflowParser): a package ``bench_workflows`` with about 100 team
modules ``team_NNN.py`` (each a dict ``WORKFLOWS``), joined into one ``WORKFLOWS`` in
``workflows.py``; shared templates in ``templates.py``. Every template kind occurs:
``JobTemplate`` plain, with ``executor``/``executor_config`` and with ``write_lock``;
``CommandJobTemplate``; a user ``JobTemplate`` subclass (``EmrJobTemplate``); a user
condition (``PathExistsConditionTemplate``, a ``ConditionTemplateBase``).

JSON format (RepositoryConfigParser): ``repo/workflow/<wf>/schedule`` and
``repo/workflow/<wf>/job/<job>``, with ``CommandConditionTemplate`` conditions and
``JobTemplate`` / ``CommandJobTemplate`` jobs.

Both formats write ``pinball.yaml`` (the Pinball config the server reads) and
``corpus.json`` (a manifest: names, job counts, the file that defines each workflow).
Helpers here also make the edits the refresh benchmark times (``edit_workflow``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "bench_workflows"
DEFAULT_WORKFLOWS = 3000
DEFAULT_MEAN_JOBS = 15
MAX_JOBS = 200
FIXED = {"bench_w200": 200, "bench_w20": 20}
TEAMS = ("ads", "growth", "search", "homefeed", "infra", "data", "spam", "billing", "shopping",
         "notifications", "video", "trust")
VERBS = ("extract", "load", "transform", "aggregate", "join", "dedupe", "score", "train",
         "export", "publish", "validate", "compact", "snapshot", "index", "rollup", "sync")
NOUNS = ("events", "pins", "boards", "users", "clicks", "impressions", "sessions", "ads",
         "campaigns", "revenue", "features", "embeddings", "logs", "partners", "reports")
POLICIES = ("SKIP", "ABORT_RUNNING", "DELAY", "DELAY_UNTIL_SUCCESS", "START_NEW")
# (recurrence as Python timedelta source, as JSON text, weight)
RECURRENCES = (("timedelta(days=1)", "1d", 60), ("timedelta(hours=1)", "1H", 15),
               ("timedelta(hours=12)", "12H", 10), ("timedelta(weeks=1)", "1w", 10),
               ("timedelta(minutes=30)", "30M", 5))


@dataclass
class JobDef:
    name: str
    kind: str  # plain | executor | write_lock | command | user_job | condition
    parents: list[str] = field(default_factory=list)
    klass: str = ""  # job class name / template name
    priority: float | None = None
    max_attempts: int | None = None
    warn: int | None = None
    abort: int | None = None


@dataclass
class WorkflowDef:
    name: str
    module: int
    jobs: list[JobDef]
    recurrence: int  # index into RECURRENCES
    hour: int
    minute: int
    policy: str
    max_running: int | None
    team: str


# --- shape ----------------------------------------------------------------------------


def job_counts(workflows: int, rng: random.Random, mean: int = DEFAULT_MEAN_JOBS) -> list[int]:
    """Counts in [1, 200] summing to about mean * workflows; the fixed workflows first."""
    fixed = [count for _, count in sorted(FIXED.items())][:workflows]
    rest = workflows - len(fixed)
    target = max(rest, mean * workflows - sum(fixed))
    # A log-normal with a long tail, then scaled so the total hits the target.
    raw = [rng.lognormvariate(1.9, 1.05) for _ in range(rest)]
    scale = target / sum(raw) if raw else 1.0
    counts = [min(MAX_JOBS, max(1, round(value * scale))) for value in raw]
    # Nudge one job at a time toward the target, keeping every count in range.
    total, step = sum(counts), 0
    while rest and total != target and step < 10 * workflows:
        index = rng.randrange(rest)
        if total < target and counts[index] < MAX_JOBS:
            counts[index] += 1
            total += 1
        elif total > target and counts[index] > 1:
            counts[index] -= 1
            total -= 1
        step += 1
    return fixed + counts


def _dag(count: int, rng: random.Random, with_conditions: bool) -> list[JobDef]:
    """A layered DAG of ``count`` jobs with fan-in and (preferential) fan-out."""
    names: list[str] = []
    used = set()
    for index in range(count):
        base = f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}"
        name = base if base not in used else f"{base}_{index}"
        used.add(name)
        names.append(name)
    conditions = 0
    if with_conditions and count >= 3:
        conditions = 1 if rng.random() < 0.8 else 2
    layers_wanted = max(1, min(count - conditions, round(math.sqrt(count) * rng.uniform(0.7, 1.5))))
    layers: list[list[int]] = [[] for _ in range(layers_wanted)]
    regular = list(range(conditions, count))
    for position, index in enumerate(regular):
        # Every layer gets at least one job; the rest are spread at random.
        layer = position if position < layers_wanted else rng.randrange(layers_wanted)
        layers[layer].append(index)
    children_count = [0] * count
    parents: list[list[int]] = [[] for _ in range(count)]
    for index in range(conditions):
        children_count[index] = 0
    for depth, layer in enumerate(layers):
        for index in layer:
            if depth == 0:
                # Top-level jobs wait for the conditions, when there are any.
                if conditions and rng.random() < 0.9:
                    parents[index] = [rng.randrange(conditions)]
                continue
            previous = layers[depth - 1]
            # Preferential attachment: jobs with many children attract more.
            weights = [1 + 3 * children_count[p] for p in previous]
            chosen = {rng.choices(previous, weights)[0]}
            roll = rng.random()
            extra = 0 if roll < 0.6 else 1 if roll < 0.85 else 2 if roll < 0.95 else \
                rng.randint(3, 12)
            earlier = [p for d in range(depth) for p in layers[d]]
            for _ in range(extra):
                chosen.add(rng.choice(earlier))
            parents[index] = sorted(chosen)
            for parent in chosen:
                children_count[parent] += 1
    kinds = rng.choices(("plain", "executor", "write_lock", "command", "user_job"),
                        (30, 15, 10, 25, 20), k=count)
    jobs = []
    for index in range(count):
        kind = "condition" if index < conditions else kinds[index]
        words = names[index].split("_")
        klass = "".join(word.title() for word in words[:2]) + f"Job{index}"
        job = JobDef(names[index], kind, [names[p] for p in parents[index]], klass)
        roll = rng.random()
        if roll < 0.15:
            job.priority = rng.choice((5, 10, 30, 2.5))
        if rng.random() < 0.3:
            job.max_attempts = rng.choice((2, 3, 5))
        if rng.random() < 0.2:
            job.warn = rng.choice((30, 60, 120)) * 60
            job.abort = job.warn * 2
        jobs.append(job)
    return jobs


def build(workflows: int = DEFAULT_WORKFLOWS, seed: int = 1, modules: int = 100,
          mean_jobs: int = DEFAULT_MEAN_JOBS) -> list[WorkflowDef]:
    rng = random.Random(seed)
    counts = job_counts(workflows, rng, mean_jobs)
    modules = max(1, min(modules, workflows))
    names = sorted(FIXED)[:workflows]
    defs = []
    for index, count in enumerate(counts):
        team = TEAMS[index % len(TEAMS)]
        name = names[index] if index < len(names) else \
            f"{team}_{rng.choice(NOUNS)}_{rng.choice(VERBS)}_{index:05d}"
        recurrence = rng.choices(range(len(RECURRENCES)), [r[2] for r in RECURRENCES])[0]
        defs.append(WorkflowDef(
            name=name, module=index % modules, jobs=_dag(count, rng, rng.random() < 0.35),
            recurrence=recurrence, hour=rng.randrange(24), minute=rng.choice((0, 15, 30, 45)),
            policy=rng.choice(POLICIES), max_running=rng.choice((None, 1, 2, 3, 5)), team=team))
    return defs


# --- Python format ----------------------------------------------------------------------

TEMPLATES_PY = '''"""Templates shared by every team (generated benchmark corpus)."""

from pinball.workflow.job import ShellConditionJob
from pinball_ext.executor.common import Platform
from pinball_ext.job_templates import ConditionTemplateBase, JobTemplate

SHARED_EMR_CONFIG = {
    'cluster_id': 'j-BENCH0001',
    'queue': 'batch',
}


class EmrJobTemplate(JobTemplate):
    """A job class run on the shared EMR cluster."""

    def __init__(self, name, write_lock=None, max_attempts=2, emails=None,
                 priority=None, warn_timeout_sec=None, abort_timeout_sec=None):
        super(EmrJobTemplate, self).__init__(
            name,
            executor=Platform.EMR,
            executor_config=dict(SHARED_EMR_CONFIG),
            write_lock=write_lock,
            max_attempts=max_attempts,
            emails=emails,
            priority=priority,
            warn_timeout_sec=warn_timeout_sec,
            abort_timeout_sec=abort_timeout_sec)


class PathExistsConditionTemplate(ConditionTemplateBase):
    """Holds once a path exists on the worker."""

    def __init__(self, name, path, max_attempts=10, retry_delay_sec=300,
                 emails=None, priority=None):
        super(PathExistsConditionTemplate, self).__init__(
            name, max_attempts=max_attempts, retry_delay_sec=retry_delay_sec,
            emails=emails, priority=priority)
        self.path = path

    def get_pinball_condition(self, outputs):
        return ShellConditionJob(
            name=self.name, outputs=outputs, emails=self.emails,
            max_attempts=self.max_attempts, retry_delay_sec=self.retry_delay_sec,
            command='test -e %s' % self.path)
'''

MODULE_HEADER = '''"""Workflows of the {team} team, part {module} (generated benchmark corpus)."""

from datetime import datetime, timedelta

from pinball.config.pinball_config import PinballConfig
from pinball.scheduler.overrun_policy import OverrunPolicy
from pinball_ext.executor.common import Platform
from pinball_ext.job_templates import CommandJobTemplate, JobTemplate
from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

from {package}.templates import EmrJobTemplate, PathExistsConditionTemplate

TEAM_EMAILS = ['{team}-oncall@example.com']
'''


def _common_args(job: JobDef) -> str:
    args = []
    if job.max_attempts is not None:
        args.append(f"max_attempts={job.max_attempts}")
    if job.priority is not None:
        args.append(f"priority={job.priority!r}")
    if job.warn is not None:
        args.append(f"warn_timeout_sec={job.warn // 60} * 60")
        args.append(f"abort_timeout_sec={job.abort // 60} * 60")
    return "".join(f", {arg}" for arg in args)


def _template_py(job: JobDef, workflow: WorkflowDef, index: int) -> str:
    common = _common_args(job)
    if job.kind == "plain":
        return f"JobTemplate('{job.klass}'{common})"
    if job.kind == "executor":
        platform = ("Platform.EMR", "Platform.QUBOLE", "Platform.LOCAL")[index % 3]
        config = (f"{{'cluster_label': '{workflow.team}', 'pool': 'batch'}}"
                  if index % 3 != 2 else "None")
        return f"JobTemplate('{job.klass}', executor={platform}, executor_config={config}{common})"
    if job.kind == "write_lock":
        return f"JobTemplate('{job.klass}', write_lock='{job.name.split('_')[-1]}_table'{common})"
    if job.kind == "command":
        command = f"cd %(job_repo_dir)s && echo \"{job.name} for $(date -u +%%Y%%m%%d)\""
        return f"CommandJobTemplate('{job.name}', {command!r}, emails=TEAM_EMAILS{common})"
    if job.kind == "user_job":
        return f"EmrJobTemplate('{job.klass}'{common})"
    return (f"PathExistsConditionTemplate('{job.name}', path='/data/{workflow.team}/{job.name}'"
            f", max_attempts=12, retry_delay_sec=600)")


def _constant(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def _workflow_py(workflow: WorkflowDef) -> str:
    const = _constant(workflow.name) + "_JOBS"
    lines = [f"{const} = {{"]
    for index, job in enumerate(workflow.jobs):
        dependency = "" if not job.parents else \
            ", dependency=[" + ", ".join(f"'{p}'" for p in job.parents) + "]"
        lines.append(f"    '{job.name}': JobConfig({_template_py(job, workflow, index)}"
                     f"{dependency}),")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _workflow_entry_py(workflow: WorkflowDef, revision: int = 0) -> str:
    recurrence = RECURRENCES[workflow.recurrence][0]
    const = _constant(workflow.name) + "_JOBS"
    max_running = ("PinballConfig.DEFAULT_MAX_WORKFLOW_RUNNING_INSTANCES"
                   if workflow.max_running is None else str(workflow.max_running))
    return (
        f"    '{workflow.name}': WorkflowConfig(\n"
        f"        jobs={const},\n"
        f"        final_job_config=JobConfig(\n"
        f"            CommandJobTemplate(\n"
        f"                'final', 'echo \"{workflow.name} done rev {revision}\"')),\n"
        f"        schedule=ScheduleConfig(\n"
        f"            recurrence={recurrence},\n"
        f"            reference_timestamp=datetime(2015, 1, 1, {workflow.hour}, "
        f"{workflow.minute}),\n"
        f"            overrun_policy=OverrunPolicy.{workflow.policy},\n"
        f"            max_running_instances={max_running}),\n"
        f"        notify_emails='{workflow.team}-oncall@example.com'),\n")


def module_name(index: int) -> str:
    return f"team_{index:03d}"


def write_python(defs: list[WorkflowDef], out: Path) -> None:
    package = out / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""Generated benchmark corpus."""\n')
    (package / "templates.py").write_text(TEMPLATES_PY)
    (package / "job_config.py").write_text("JOB_IMPORT_DIRS = ['bench_jobs']\n")
    modules: dict[int, list[WorkflowDef]] = {}
    for workflow in defs:
        modules.setdefault(workflow.module, []).append(workflow)
    for module, members in sorted(modules.items()):
        parts = [MODULE_HEADER.format(team=members[0].team, module=module, package=PACKAGE)]
        parts += ["\n" + _workflow_py(workflow) for workflow in members]
        parts.append("\nWORKFLOWS = {\n")
        parts += [_workflow_entry_py(workflow) for workflow in members]
        parts.append("}\n")
        (package / f"{module_name(module)}.py").write_text("".join(parts))
    imports = "".join(f"from {PACKAGE} import {module_name(m)}\n" for m in sorted(modules))
    updates = "".join(f"WORKFLOWS.update({module_name(m)}.WORKFLOWS)\n" for m in sorted(modules))
    (package / "workflows.py").write_text(
        '"""Every workflow of the repo, as the Pinball parser config names them."""\n\n'
        + imports + "\nWORKFLOWS = {}\n" + updates)
    (out / "pinball.yaml").write_text(
        "parser: pinball_ext.workflow.parser.PyWorkflowParser\n"
        "parser_params:\n"
        f"  workflows_config: {PACKAGE}.workflows.WORKFLOWS\n"
        "  job_repo_dir: /mnt/pinball_jobs\n"
        f"  job_import_dirs_config: {PACKAGE}.job_config.JOB_IMPORT_DIRS\n"
        "  job_params:\n"
        "    env: prod\n"
        "default_email: pinball-alerts@example.com\n")


# --- JSON format ------------------------------------------------------------------------


def _job_json(job: JobDef, workflow: WorkflowDef, index: int) -> dict:
    base = {"workflow": workflow.name, "job": job.name}
    if job.kind == "condition":
        return {**base, "is_condition": True,
                "template": "pinball_ext.job_templates.CommandConditionTemplate",
                "template_params": {"command": f"test -e /data/{workflow.team}/{job.name}",
                                    "cleanup_template": f"echo cleanup {job.name}"},
                "parents": [], "emails": [f"{workflow.team}-oncall@example.com"],
                "max_attempts": 72, "retry_delay_sec": 1200, "priority": 1}
    # The JSON format builds templates from (name, max_attempts, emails, priority) only,
    # so runner jobs are JobTemplate (a CommandJobTemplate would have no command).
    template = "pinball_ext.job_templates.JobTemplate"
    params: dict = {"job_repo_dir": "/mnt/pinball_jobs",
                    "job_import_dirs_config": f"{PACKAGE}.job_config.JOB_IMPORT_DIRS"}
    if index % 3 == 0:
        params["job_params"] = {"env": "prod", "team": workflow.team}
    data = {**base, "is_condition": False, "template": template, "template_params": params,
            "parents": job.parents, "emails": [f"{workflow.team}-oncall@example.com"],
            "max_attempts": job.max_attempts or 1,
            "retry_delay_sec": 300 if job.max_attempts else 0,
            "priority": job.priority if job.priority is not None else 1}
    if job.warn is not None:
        data["warn_timeout_sec"] = job.warn
        data["abort_timeout_sec"] = job.abort
    return data


def write_json(defs: list[WorkflowDef], out: Path) -> None:
    root = out / "repo" / "workflow"
    root.mkdir(parents=True)
    for workflow in defs:
        folder = root / workflow.name
        (folder / "job").mkdir(parents=True)
        schedule = {"workflow": workflow.name, "start_date": "2015-01-01",
                    "time": f"{workflow.hour:02d}.{workflow.minute:02d}.00.000",
                    "recurrence": RECURRENCES[workflow.recurrence][1],
                    "overrun_policy": workflow.policy,
                    "emails": [f"{workflow.team}-oncall@example.com"]}
        (folder / "schedule").write_text(json.dumps(schedule, indent=4) + "\n")
        for index, job in enumerate(workflow.jobs):
            (folder / "job" / job.name).write_text(
                json.dumps(_job_json(job, workflow, index), indent=4) + "\n")
    (out / "pinball.yaml").write_text(
        "parser: pinball.parser.repository_config_parser.RepositoryConfigParser\n"
        "parser_params:\n"
        "  repository_root: repo\n"
        "default_email: pinball-alerts@example.com\n")


# --- both -------------------------------------------------------------------------------


def generate(out: str | os.PathLike, workflows: int = DEFAULT_WORKFLOWS, fmt: str = "python",
             seed: int = 1, modules: int = 100, mean_jobs: int = DEFAULT_MEAN_JOBS) -> dict:
    """Write the corpus into ``out`` (replaced if it exists); return the manifest."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    defs = build(workflows, seed, modules, mean_jobs)
    if fmt == "python":
        write_python(defs, out)
        files = {w.name: f"{PACKAGE}/{module_name(w.module)}.py" for w in defs}
    elif fmt == "json":
        write_json(defs, out)
        files = {w.name: f"repo/workflow/{w.name}/job/{w.jobs[-1].name}" for w in defs}
    else:
        raise ValueError(f"unknown format {fmt!r}; expected python or json")
    kinds: dict[str, int] = {}
    for workflow in defs:
        for job in workflow.jobs:
            kind = job.kind if fmt == "python" else \
                "CommandConditionTemplate" if job.kind == "condition" else "JobTemplate"
            kinds[kind] = kinds.get(kind, 0) + 1
    manifest = {
        "format": fmt, "seed": seed, "workflows": len(defs),
        "jobs": sum(len(w.jobs) for w in defs),
        # The Python format adds one final job per workflow.
        "jobs_served": sum(len(w.jobs) for w in defs) + (len(defs) if fmt == "python" else 0),
        "modules": len({w.module for w in defs}) if fmt == "python" else 0,
        "max_jobs": max(len(w.jobs) for w in defs),
        "min_jobs": min(len(w.jobs) for w in defs),
        "max_parents": max(len(j.parents) for w in defs for j in w.jobs),
        "template_kinds": dict(sorted(kinds.items())),
        "fixed": {name: count for name, count in FIXED.items() if name in files},
        "edit_files": files,
        "pinball_yaml": "pinball.yaml",
    }
    (out / "corpus.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def edit_workflow(out: str | os.PathLike, manifest: dict, workflow: str, revision: int) -> str:
    """Change one workflow's definition in place, as a person editing one file would:
    the final job's command (Python) or one job file's max_attempts (JSON). Returns the
    path written."""
    out = Path(out)
    path = out / manifest["edit_files"][workflow]
    text = path.read_text()
    if manifest["format"] == "python":
        pattern = re.compile(r'(echo "' + re.escape(workflow) + r' done rev )(\d+)(")')
        text, count = pattern.subn(lambda m: f"{m.group(1)}{revision}{m.group(3)}", text)
        if count != 1:
            raise ValueError(f"{path}: no final-job marker for {workflow}")
    else:
        data = json.loads(text)
        data["max_attempts"] = 1000 + revision
        text = json.dumps(data, indent=4) + "\n"
    # Write to a temporary file and rename: what editors and git checkouts do.
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.corpus", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflows", type=int, default=DEFAULT_WORKFLOWS)
    parser.add_argument("--format", choices=("python", "json"), default="python")
    parser.add_argument("--out", required=True, help="folder to write (replaced if present)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--modules", type=int, default=100,
                        help="Python format: how many definition modules")
    parser.add_argument("--mean-jobs", type=int, default=DEFAULT_MEAN_JOBS)
    args = parser.parse_args(argv)
    if args.workflows < 1:
        parser.error("--workflows must be at least 1")
    manifest = generate(args.out, args.workflows, args.format, args.seed, args.modules,
                        args.mean_jobs)
    summary = {key: manifest[key] for key in ("format", "workflows", "jobs", "jobs_served",
                                              "modules", "min_jobs", "max_jobs", "max_parents",
                                              "template_kinds")}
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
