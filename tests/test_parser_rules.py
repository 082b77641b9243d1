"""The parser against docs/pinball-compatibility.md, one rule at a time, with exact values.

The bundled example repos are parsed once per module through the real sandbox; rules the
examples do not exercise use small scratch repos. Expected values are literals worked out
from the format description (and checked against Pinball's own parser run as an oracle).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from legacy_parser.model import (
    CommandTemplate,
    ErrorKind,
    JobKind,
    OverrunPolicy,
    ParseResult,
    Schedule,
    SourceFile,
    from_plain,
    to_plain,
)
from legacy_parser.tokens import EventToken, JobToken, RunTokens, ScheduleToken, run_tokens
from tests.helpers import EXAMPLES, JSON_PARSER, PY_PARSER, parse_repo, write_repo

PYTHON_REPO = EXAMPLES / "python_repo"
JSON_REPO = EXAMPLES / "json_repo"

RUN_EPOCH = 1422835201  # 2015-02-02 00:00:01 UTC
INSTANCE = "1422835201000"
END_DATE = "2015-02-01"


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def py_result(sandbox) -> ParseResult:
    result = parse_repo(sandbox, PYTHON_REPO, "example_python")
    assert result.errors == ()
    return result


@pytest.fixture(scope="module")
def json_result(sandbox) -> ParseResult:
    result = parse_repo(sandbox, JSON_REPO, "example_json")
    assert result.errors == ()
    return result


def workflow_of(result: ParseResult, name: str):
    matches = [workflow for workflow in result.workflows if workflow.name == name]
    assert len(matches) == 1, f"{name} not among {[w.name for w in result.workflows]}"
    return matches[0]


def job_of(result: ParseResult, workflow: str, job: str):
    found = workflow_of(result, workflow).job(job)
    assert found is not None, f"{workflow} has no job {job}"
    return found


# A scratch Python repo for the rules the examples do not exercise.
SCRATCH_DEFS = '''
from datetime import datetime, timedelta

from pinball_ext.job_templates import CommandJobTemplate, JobTemplate
from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig


class AuditedJobTemplate(JobTemplate):
    """A user subclass that overrides get_pinball_job."""

    def get_pinball_job(self, inputs, outputs, params):
        job = super(AuditedJobTemplate, self).get_pinball_job(inputs, outputs, params)
        job.command = job.command + '&& echo audited'
        job.retry_delay_sec = 90
        return job


DAILY = ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, 6, 0))


def final(command='echo done'):
    return JobConfig(CommandJobTemplate('final', command))


WORKFLOWS = {
    'params': WorkflowConfig(
        jobs={'run': JobConfig(JobTemplate('ParamsJob'))},
        final_job_config=final(),
        schedule=DAILY),
    'audited': WorkflowConfig(
        jobs={'audit': JobConfig(AuditedJobTemplate('AuditJob', executor='emr'))},
        final_job_config=final(),
        schedule=DAILY),
    'percent_final': WorkflowConfig(
        jobs={'only': JobConfig(CommandJobTemplate('only', 'df -h | grep 9%%'))},
        final_job_config=final('echo 100%% done'),
        schedule=DAILY),
    'empty': WorkflowConfig(jobs={}, final_job_config=final(), schedule=DAILY),
    'job_template_final': WorkflowConfig(
        jobs={'only': JobConfig(CommandJobTemplate('only', 'echo only'))},
        final_job_config=JobConfig(JobTemplate('FinalJob')),
        schedule=DAILY),
    'param_in_final': WorkflowConfig(
        jobs={'only': JobConfig(CommandJobTemplate('only', 'echo only'))},
        final_job_config=JobConfig(CommandJobTemplate('final', 'cd %(job_repo_dir)s')),
        schedule=DAILY),
    'combinations': WorkflowConfig(
        jobs={
            'config_only': JobConfig(JobTemplate('ConfigOnlyJob',
                                                 executor_config={'pool': 'b', 'size': 3})),
            'executor_and_lock': JobConfig(JobTemplate('LockedJob', executor='local',
                                                       write_lock='nightly')),
        },
        final_job_config=final(),
        schedule=DAILY),
}
'''


@pytest.fixture(scope="module")
def scratch_repo(tmp_path_factory) -> Path:
    return write_repo(tmp_path_factory.mktemp("scratch_python"), {
        "scratch_defs/__init__.py": "",
        "scratch_defs/workflows.py": SCRATCH_DEFS,
    })


def scratch_params(**extra) -> dict:
    params = {
        "workflows_config": "scratch_defs.workflows.WORKFLOWS",
        "job_repo_dir": "/srv/jobs",
        "job_import_dirs_config": "jobs.config.DIRS",
    }
    params.update(extra)
    return params


@pytest.fixture(scope="module")
def scratch_result(sandbox, scratch_repo) -> ParseResult:
    return sandbox.parse("scratch", str(scratch_repo), PY_PARSER,
                         scratch_params(job_params={"env": "test"}))


# --- graph: final job, leaves, inputs and outputs (section 2, graph semantics 1-4) -----

FINAL_PARENTS = {
    "daily_reporting": ("publish_dashboard",),
    "hourly_metrics": ("push_metrics",),
    "event_ingest": ("notify_child",),
    "partner_ingest": ("load_feed", "check_feed"),
    "weekly_cleanup": ("compact_partitions", "rotate_logs"),
    "db_backup": ("verify_snapshot",),
    "failure_drill": ("never_runs",),
}


def test_python_example_workflows_are_all_returned_sorted(py_result):
    assert [workflow.name for workflow in py_result.workflows] == [
        "daily_reporting", "db_backup", "event_ingest", "failure_drill", "hourly_metrics",
        "partner_ingest", "weekly_cleanup",
    ]
    assert py_result.cluster == "example_python"


@pytest.mark.parametrize(("workflow", "leaves"), sorted(FINAL_PARENTS.items()))
def test_final_job_is_added_and_depends_on_every_leaf(py_result, workflow, leaves):
    parsed = workflow_of(py_result, workflow)
    assert parsed.final_job == "final"
    final = parsed.job("final")
    assert final.parents == leaves
    assert final.inputs == leaves
    assert final.children == ()
    assert final.outputs == ()
    for leaf in leaves:
        assert parsed.job(leaf).children == ("final",)
        assert parsed.job(leaf).outputs == ("final",)


@pytest.mark.parametrize("workflow", sorted(FINAL_PARENTS))
def test_final_is_the_only_leaf(py_result, workflow):
    parsed = workflow_of(py_result, workflow)
    assert [job.name for job in parsed.jobs if not job.children] == ["final"]


def test_final_job_is_named_final_whatever_its_template_is_called(py_result):
    final = job_of(py_result, "partner_ingest", "final")
    assert final.template_name == "partner_ingest_done"
    tokens = run_tokens(workflow_of(py_result, "partner_ingest"), RUN_EPOCH)
    final_token = next(token for token in tokens.jobs if token.job == "final")
    assert final_token.name == "/workflow/partner_ingest/1422835201000/job/waiting/final"
    assert final_token.payload_name == "partner_ingest_done"


def test_jobs_are_sorted_by_name_and_include_final(py_result):
    assert [job.name for job in workflow_of(py_result, "daily_reporting").jobs] == [
        "engagement_report", "final", "job_code_deployed", "load_events",
        "publish_dashboard", "revenue_report",
    ]


DAILY_REPORTING_GRAPH = {
    # job: (inputs, outputs)
    "job_code_deployed": (("__WORKFLOW_START__",), ("load_events",)),
    "load_events": (("job_code_deployed",), ("revenue_report", "engagement_report")),
    "revenue_report": (("load_events",), ("publish_dashboard",)),
    "engagement_report": (("load_events",), ("publish_dashboard",)),
    "publish_dashboard": (("revenue_report", "engagement_report"), ("final",)),
    "final": (("publish_dashboard",), ()),
}


@pytest.mark.parametrize(("job", "inputs", "outputs"),
                         [(job, *io) for job, io in DAILY_REPORTING_GRAPH.items()])
def test_inputs_are_parents_or_workflow_start_and_outputs_are_children(
        py_result, job, inputs, outputs):
    parsed = job_of(py_result, "daily_reporting", job)
    assert parsed.inputs == inputs
    assert parsed.outputs == outputs
    assert parsed.parents == (() if inputs == ("__WORKFLOW_START__",) else inputs)
    assert parsed.children == outputs


@pytest.mark.parametrize(("workflow", "top_level"), [
    ("event_ingest", ["fetch_logs"]),
    ("weekly_cleanup", ["rotate_logs", "vacuum_tables"]),
    ("partner_ingest", ["download_feed"]),
])
def test_top_level_jobs_have_the_workflow_start_input(py_result, workflow, top_level):
    parsed = workflow_of(py_result, workflow)
    assert [job.name for job in parsed.jobs if job.inputs == ("__WORKFLOW_START__",)] \
        == top_level
    assert [job.name for job in parsed.jobs if not job.parents] == top_level


def test_a_workflow_without_jobs_is_just_its_final_job(scratch_result):
    empty = workflow_of(scratch_result, "empty")
    assert [job.name for job in empty.jobs] == ["final"]
    final = empty.job("final")
    assert final.inputs == ("__WORKFLOW_START__",)
    assert final.score == 1.0
    tokens = run_tokens(empty, RUN_EPOCH)
    assert [token.name for token in tokens.jobs] == [
        "/workflow/empty/1422835201000/job/waiting/final"]
    assert [event.name for event in tokens.events] == [
        "/workflow/empty/1422835201000/input/final/__WORKFLOW_START__/workflow_start_event"]


def test_json_format_adds_no_final_job(json_result):
    rollup = workflow_of(json_result, "json_daily_rollup")
    assert rollup.final_job == ""
    assert rollup.job("final") is None
    assert [job.name for job in rollup.jobs] == [
        "RollupCountsJob", "RollupExtractJob", "RollupPublishJob", "RollupUsersJob",
        "input_ready",
    ]
    publish = rollup.job("RollupPublishJob")
    assert publish.inputs == ("RollupCountsJob", "RollupUsersJob")
    assert publish.outputs == ()
    extract = rollup.job("RollupExtractJob")
    assert extract.inputs == ("input_ready",)
    assert extract.outputs == ("RollupCountsJob", "RollupUsersJob")
    assert rollup.job("input_ready").inputs == ("__WORKFLOW_START__",)


# --- priorities and scores (graph semantics 5) -------------------------------------------


@pytest.mark.parametrize(("workflow", "job", "priority"), [
    ("daily_reporting", "load_events", 30.0),
    ("daily_reporting", "engagement_report", 5.5),
    ("daily_reporting", "revenue_report", 1.0),  # unset
    ("daily_reporting", "job_code_deployed", 1.0),  # a condition, unset
    ("daily_reporting", "final", 1.0),
    ("event_ingest", "dedupe_events", 1.0),  # priority=0
    ("db_backup", "verify_snapshot", 5.5),
    ("weekly_cleanup", "compact_partitions", 30.0),
])
def test_priority_is_the_templates_or_one_when_unset_or_zero(py_result, workflow, job,
                                                             priority):
    assert job_of(py_result, workflow, job).priority == priority


def test_json_priority_zero_means_one(json_result):
    assert job_of(json_result, "json_table_sync", "SyncAuditJob").priority == 1.0
    assert job_of(json_result, "json_daily_rollup", "RollupUsersJob").priority == 2.5


SCORES = {
    "daily_reporting": {"job_code_deployed": 39.5, "load_events": 38.5,
                        "engagement_report": 7.5, "revenue_report": 3, "publish_dashboard": 2,
                        "final": 1},
    "event_ingest": {"fetch_logs": 5, "parse_logs": 4, "dedupe_events": 3, "notify_child": 2,
                     "final": 1},
    "partner_ingest": {"download_feed": 4, "load_feed": 2, "check_feed": 2, "final": 1},
    "weekly_cleanup": {"vacuum_tables": 32, "compact_partitions": 31, "rotate_logs": 2,
                       "final": 1},
    "db_backup": {"snapshot_db": 7.5, "verify_snapshot": 6.5, "final": 1},
    "failure_drill": {"job_code_deployed": 4, "always_fails": 3, "never_runs": 2, "final": 1},
    "hourly_metrics": {"compute_hourly_metrics": 3, "push_metrics": 2, "final": 1},
}


@pytest.mark.parametrize(("workflow", "scores"), sorted(SCORES.items()))
def test_scores_sum_priorities_of_the_job_and_everything_below_it(py_result, workflow,
                                                                  scores):
    parsed = workflow_of(py_result, workflow)
    assert {job.name: job.score for job in parsed.jobs} == scores


def test_a_job_reached_by_two_paths_is_counted_once(py_result):
    # load_events -> revenue_report -> publish_dashboard and
    # load_events -> engagement_report -> publish_dashboard: publish (1) and final (1)
    # count once: 30 + 1 + 5.5 + 1 + 1.
    assert job_of(py_result, "daily_reporting", "load_events").score == 38.5


def test_job_token_priority_is_the_score_and_condition_token_priority_is_zero(py_result):
    parsed = workflow_of(py_result, "daily_reporting")
    assert {job.name: job.token_priority for job in parsed.jobs} == {
        "job_code_deployed": 0.0, "load_events": 38.5, "engagement_report": 7.5,
        "revenue_report": 3.0, "publish_dashboard": 2.0, "final": 1.0,
    }
    tokens = {token.job: token for token in run_tokens(parsed, RUN_EPOCH).jobs}
    assert tokens["job_code_deployed"].priority == 0.0
    assert tokens["job_code_deployed"].is_condition is True
    assert tokens["load_events"].priority == 38.5
    assert tokens["load_events"].is_condition is False


JSON_SCORES = {
    "json_daily_rollup": {"input_ready": 15.5, "RollupExtractJob": 14.5,
                          "RollupUsersJob": 3.5, "RollupCountsJob": 2, "RollupPublishJob": 1},
    "json_table_sync": {"sync_tables": 2, "SyncAuditJob": 1},
    "json_weekly_compaction": {"CompactPartitionsJob": 31, "VacuumTablesJob": 1},
    "json_heartbeat": {"heartbeat": 1},
}


@pytest.mark.parametrize(("workflow", "scores"), sorted(JSON_SCORES.items()))
def test_json_token_priority_is_zero_though_scores_are_computed(json_result, workflow,
                                                                scores):
    parsed = workflow_of(json_result, workflow)
    assert {job.name: job.score for job in parsed.jobs} == scores
    assert {job.name: job.token_priority for job in parsed.jobs} == {
        name: 0.0 for name in scores}
    assert {token.priority for token in run_tokens(parsed, RUN_EPOCH).jobs} == {0.0}


# --- JobTemplate command lines (section 2, commands) ---------------------------------------

JOB_TEMPLATE_COMMANDS = [
    # no executor, no executor config, no write lock
    ("daily_reporting", "publish_dashboard",
     'cd . && python -m pinball_ext.job.job_runner '
     '--job_import_dirs_config=example_workflows.job_config.JOB_IMPORT_DIRS '
     '--job_class_name=PublishDashboardJob --job_params="env=example,end_date=2015-02-01" '),
    # executor only
    ("event_ingest", "parse_logs",
     'cd . && python -m pinball_ext.job.job_runner '
     '--job_import_dirs_config=example_workflows.job_config.JOB_IMPORT_DIRS '
     '--job_class_name=ParseLogsJob --job_params="env=example,end_date=2015-02-01" '
     '--executor=local '),
    # write lock only
    ("event_ingest", "dedupe_events",
     'cd . && python -m pinball_ext.job.job_runner '
     '--job_import_dirs_config=example_workflows.job_config.JOB_IMPORT_DIRS '
     '--job_class_name=DedupeEventsJob --job_params="env=example,end_date=2015-02-01" '
     '--write_lock=events_table '),
    # executor and executor config, two pairs in their order
    ("daily_reporting", "engagement_report",
     'cd . && python -m pinball_ext.job.job_runner '
     '--job_import_dirs_config=example_workflows.job_config.JOB_IMPORT_DIRS '
     '--job_class_name=EngagementReportJob --job_params="env=example,end_date=2015-02-01" '
     '--executor=qubole --executor_config="cluster_label=reporting,pool=batch" '),
    # executor, executor config and write lock (a user subclass sets the executor)
    ("daily_reporting", "revenue_report",
     'cd . && python -m pinball_ext.job.job_runner '
     '--job_import_dirs_config=example_workflows.job_config.JOB_IMPORT_DIRS '
     '--job_class_name=RevenueReportJob --job_params="env=example,end_date=2015-02-01" '
     '--executor=emr --executor_config="cluster_id=j-EXAMPLE0001,queue=reporting" '
     '--write_lock=reporting_db '),
    ("weekly_cleanup", "compact_partitions",
     'cd . && python -m pinball_ext.job.job_runner '
     '--job_import_dirs_config=example_workflows.job_config.JOB_IMPORT_DIRS '
     '--job_class_name=CompactPartitionsJob --job_params="env=example,end_date=2015-02-01" '
     '--executor=emr --executor_config="cluster_id=j-EXAMPLE0002" --write_lock=warehouse '),
    ("weekly_cleanup", "vacuum_tables",
     'cd . && python -m pinball_ext.job.job_runner '
     '--job_import_dirs_config=example_workflows.job_config.JOB_IMPORT_DIRS '
     '--job_class_name=VacuumTablesJob --job_params="env=example,end_date=2015-02-01" '
     '--write_lock=warehouse '),
    ("db_backup", "snapshot_db",
     'cd . && python -m pinball_ext.job.job_runner '
     '--job_import_dirs_config=example_workflows.job_config.JOB_IMPORT_DIRS '
     '--job_class_name=SnapshotDatabaseJob --job_params="env=example,end_date=2015-02-01" '),
]


@pytest.mark.parametrize(("workflow", "job", "command"), JOB_TEMPLATE_COMMANDS)
def test_job_template_command_lines_are_byte_identical(py_result, workflow, job, command):
    parsed = job_of(py_result, workflow, job)
    assert parsed.command.render(END_DATE) == command
    assert parsed.command.uses_end_date
    token = next(t for t in run_tokens(workflow_of(py_result, workflow), RUN_EPOCH).jobs
                 if t.job == job)
    assert token.command == command
    assert token.command.endswith(" ")


@pytest.mark.parametrize(("job", "command"), [
    # an executor config without an executor
    ("config_only",
     'cd /srv/jobs && python -m pinball_ext.job.job_runner '
     '--job_import_dirs_config=jobs.config.DIRS --job_class_name=ConfigOnlyJob '
     '--job_params="env=test,end_date=2015-02-01" --executor_config="pool=b,size=3" '),
    # an executor and a write lock without an executor config
    ("executor_and_lock",
     'cd /srv/jobs && python -m pinball_ext.job.job_runner '
     '--job_import_dirs_config=jobs.config.DIRS --job_class_name=LockedJob '
     '--job_params="env=test,end_date=2015-02-01" --executor=local --write_lock=nightly '),
])
def test_job_template_command_lines_other_combinations(scratch_result, job, command):
    assert job_of(scratch_result, "combinations", job).command.render(END_DATE) == command


def test_job_template_command_is_split_around_the_end_date(py_result):
    assert job_of(py_result, "daily_reporting", "publish_dashboard").command == \
        CommandTemplate(segments=(
            'cd . && python -m pinball_ext.job.job_runner '
            '--job_import_dirs_config=example_workflows.job_config.JOB_IMPORT_DIRS '
            '--job_class_name=PublishDashboardJob --job_params="env=example,end_date=',
            '" ',
        ))


@pytest.mark.parametrize(("workflow", "job", "executor", "executor_config", "write_lock"), [
    ("daily_reporting", "publish_dashboard", "", (), ""),
    ("daily_reporting", "revenue_report", "emr",
     (("cluster_id", "j-EXAMPLE0001"), ("queue", "reporting")), "reporting_db"),
    ("daily_reporting", "engagement_report", "qubole",
     (("cluster_label", "reporting"), ("pool", "batch")), ""),
    ("event_ingest", "dedupe_events", "", (), "events_table"),
])
def test_executor_fields_are_recorded(py_result, workflow, job, executor, executor_config,
                                      write_lock):
    parsed = job_of(py_result, workflow, job)
    assert (parsed.executor, parsed.executor_config, parsed.write_lock) == \
        (executor, executor_config, write_lock)


@pytest.mark.parametrize(("job", "command"), [
    ("RollupExtractJob",
     'cd ../python_repo && python -m pinball_ext.job.job_runner '
     '--job_import_dirs_config=example_workflows.job_config.JOB_IMPORT_DIRS '
     '--job_class_name=RollupExtractJob --job_params="env=json,end_date=2015-02-01" '),
    ("RollupCountsJob",
     'cd ../python_repo && python -m pinball_ext.job.job_runner '
     '--job_import_dirs_config=example_workflows.job_config.JOB_IMPORT_DIRS '
     '--job_class_name=RollupCountsJob --job_params="end_date=2015-02-01" '),
])
def test_json_job_template_takes_its_params_from_template_params(json_result, job,
                                                                 command):
    parsed = job_of(json_result, "json_daily_rollup", job)
    assert parsed.command.render(END_DATE) == command


# --- CommandJobTemplate %-rendering -------------------------------------------------------


@pytest.mark.parametrize(("workflow", "job", "command"), [
    # %(job_repo_dir)s expands, %% becomes %
    ("event_ingest", "fetch_logs", 'cd . && echo "fetching logs for $(date -u +%Y%m%d)"'),
    ("partner_ingest", "check_feed", "test -d ./example_jobs"),
    ("db_backup", "verify_snapshot", "test -d ."),
    ("hourly_metrics", "push_metrics", 'echo "metrics pushed at $(date -u +%Y-%m-%dT%H:%MZ)"'),
    # %%(a_cmd_key)s is kept as a run-time placeholder
    ("event_ingest", "notify_child", 'echo "child: %(a_cmd_key)s"'),
    # final jobs (rendered without parser params)
    ("event_ingest", "final", 'echo "event_ingest finished"'),
    ("hourly_metrics", "final", "true"),
])
def test_command_job_template_renders_with_the_parser_params(py_result, workflow, job,
                                                             command):
    parsed = job_of(py_result, workflow, job)
    assert parsed.command == CommandTemplate(segments=(command,))
    assert not parsed.command.uses_end_date
    token = next(t for t in run_tokens(workflow_of(py_result, workflow), RUN_EPOCH).jobs
                 if t.job == job)
    assert token.command == command


@pytest.mark.parametrize(("workflow", "job", "command"), [
    ("json_heartbeat", "heartbeat", 'echo "heartbeat at $(date -u +%H:%M)"'),
    ("json_table_sync", "sync_tables", 'echo "syncing tables into analytics"'),
])
def test_json_command_templates_render_with_template_params(json_result, workflow, job,
                                                            command):
    assert job_of(json_result, workflow, job).command.render(END_DATE) == command


def test_final_job_renders_with_no_params_so_percent_percent_is_a_percent(scratch_result):
    percent = workflow_of(scratch_result, "percent_final")
    assert percent.job("final").command.render(END_DATE) == "echo 100% done"
    assert percent.job("only").command.render(END_DATE) == "df -h | grep 9%"


def test_final_job_gets_no_parser_params(scratch_result):
    errors = {error.workflow: error for error in scratch_result.errors}
    assert sorted(errors) == ["job_template_final", "param_in_final"]
    # A CommandJobTemplate final job cannot use %(job_repo_dir)s: it gets no params.
    param = errors["param_in_final"]
    assert (param.kind, param.job, param.file, param.line) == (
        ErrorKind.COMMAND_FORMAT, "final", "scratch_defs/workflows.py", 44)
    assert "'job_repo_dir'" in param.message
    assert "known: none" in param.message
    # A JobTemplate final job is an error: it needs job_repo_dir and job_import_dirs_config.
    template = errors["job_template_final"]
    assert (template.kind, template.job, template.file, template.line) == (
        ErrorKind.TEMPLATE_ERROR, "final", "scratch_defs/workflows.py", 40)
    assert "FinalJob" in template.message
    assert "final job" in template.message
    # the other workflows of the module are still there
    assert [workflow.name for workflow in scratch_result.workflows] == [
        "audited", "combinations", "empty", "params", "percent_final"]


# --- job_params and end_date ----------------------------------------------------------------

PARAMS_PREFIX = ('cd /srv/jobs && python -m pinball_ext.job.job_runner '
                 '--job_import_dirs_config=jobs.config.DIRS --job_class_name=ParamsJob ')


@pytest.mark.parametrize(("extra_params", "segments"), [
    # no job_params: end_date alone
    ({}, (PARAMS_PREFIX + '--job_params="end_date=', '" ')),
    # job_params in their order, then end_date
    ({"job_params": {"zone": "eu", "env": "test", "mode": "full"}},
     (PARAMS_PREFIX + '--job_params="zone=eu,env=test,mode=full,end_date=', '" ')),
    # an end_date already in job_params keeps its place and takes the run's value
    ({"job_params": {"a": 1, "end_date": "1999-12-31", "b": 2}},
     (PARAMS_PREFIX + '--job_params="a=1,end_date=', ',b=2" ')),
    # a parser-param end_date wins, and the command no longer depends on the run
    ({"job_params": {"a": 1, "end_date": "1999-12-31", "b": 2}, "end_date": "2000-01-02"},
     (PARAMS_PREFIX + '--job_params="a=1,end_date=2000-01-02,b=2" ',)),
    ({"job_params": {"env": "test"}, "end_date": "2000-01-02"},
     (PARAMS_PREFIX + '--job_params="env=test,end_date=2000-01-02" ',)),
])
def test_job_params_order_and_end_date_placement(sandbox, scratch_repo, extra_params,
                                                 segments):
    result = sandbox.parse("scratch", str(scratch_repo), PY_PARSER,
                           scratch_params(**extra_params))
    job = job_of(result, "params", "run")
    assert job.command == CommandTemplate(segments=segments)
    assert job.command.uses_end_date == (len(segments) == 2)


def test_end_date_in_the_command_is_the_day_before_the_run(py_result):
    workflow = workflow_of(py_result, "daily_reporting")
    for run_epoch, end_date in [
        (1422835201, "2015-02-01"),  # 2015-02-02 00:00:01
        (1422835200, "2015-02-01"),  # 2015-02-02 00:00:00
        (1422921599, "2015-02-01"),  # 2015-02-02 23:59:59
        (1422921600, "2015-02-02"),  # 2015-02-03 00:00:00
        (1420092000, "2014-12-31"),  # 2015-01-01 06:00
    ]:
        tokens = run_tokens(workflow, run_epoch)
        assert tokens.end_date == end_date
        publish = next(token for token in tokens.jobs if token.job == "publish_dashboard")
        assert f'--job_params="env=example,end_date={end_date}" ' in publish.command


# --- user templates ---------------------------------------------------------------------------


def test_user_job_template_subclass_fixing_executor_and_config(py_result):
    load = job_of(py_result, "daily_reporting", "load_events")
    assert load.kind is JobKind.JOB
    assert load.template == "example_workflows.templates.EmrJobTemplate"
    assert load.template_name == "LoadEventsJob"
    assert load.max_attempts == 2  # the subclass's default
    assert load.executor == "emr"
    assert load.executor_config == (("cluster_id", "j-EXAMPLE0001"), ("queue", "reporting"))
    assert load.command.render(END_DATE) == (
        'cd . && python -m pinball_ext.job.job_runner '
        '--job_import_dirs_config=example_workflows.job_config.JOB_IMPORT_DIRS '
        '--job_class_name=LoadEventsJob --job_params="env=example,end_date=2015-02-01" '
        '--executor=emr --executor_config="cluster_id=j-EXAMPLE0001,queue=reporting" ')


def test_user_job_template_overriding_get_pinball_job_keeps_working(scratch_result):
    audit = job_of(scratch_result, "audited", "audit")
    assert audit.template == "scratch_defs.workflows.AuditedJobTemplate"
    assert audit.retry_delay_sec == 90
    assert audit.command.render(END_DATE) == (
        'cd /srv/jobs && python -m pinball_ext.job.job_runner '
        '--job_import_dirs_config=jobs.config.DIRS --job_class_name=AuditJob '
        '--job_params="env=test,end_date=2015-02-01" --executor=emr && echo audited')


def test_user_condition_template_building_a_shell_condition_job(py_result):
    condition = job_of(py_result, "daily_reporting", "job_code_deployed")
    assert condition.kind is JobKind.CONDITION
    assert condition.is_condition
    assert condition.template == "example_workflows.templates.PathExistsConditionTemplate"
    assert condition.template_name == "job_code_deployed"
    assert condition.command.render(END_DATE) == "test -e example_jobs"
    assert (condition.max_attempts, condition.retry_delay_sec) == (12, 600)
    assert condition.inputs == ("__WORKFLOW_START__",)
    assert condition.outputs == ("load_events",)
    assert condition.token_priority == 0.0
    # the template's own defaults (10 attempts, 300 s) when the definition sets none
    drill = job_of(py_result, "failure_drill", "job_code_deployed")
    assert (drill.max_attempts, drill.retry_delay_sec) == (10, 300)


def test_json_command_condition_template(json_result):
    condition = job_of(json_result, "json_daily_rollup", "input_ready")
    assert condition.kind is JobKind.CONDITION
    assert condition.template == "pinball_ext.job_templates.CommandConditionTemplate"
    assert condition.command.render(END_DATE) == "test -d ../python_repo/example_jobs"
    assert condition.cleanup_template == 'echo "cleaning up input_ready"'
    assert (condition.max_attempts, condition.retry_delay_sec) == (72, 1200)
    assert condition.emails == ("data-oncall@example.com",)


# --- ShellJob fields -------------------------------------------------------------------------


@pytest.mark.parametrize(("workflow", "job", "fields"), [
    # (max_attempts, retry_delay_sec, warn_timeout_sec, abort_timeout_sec, emails)
    ("event_ingest", "fetch_logs", (3, 0, None, None, ("ingest-oncall@example.com",))),
    ("event_ingest", "parse_logs", (2, 0, 1800, 3600, ())),
    ("partner_ingest", "download_feed", (1, 0, None, None, ())),  # max_attempts=None
    ("partner_ingest", "load_feed", (2, 0, None, 7200, ())),
    ("daily_reporting", "engagement_report", (1, 0, 7200, 14400, ())),
    ("daily_reporting", "publish_dashboard", (3, 0, None, None,
                                              ("reporting-oncall@example.com",))),
    ("db_backup", "snapshot_db", (3, 0, 600, None, ("platform-oncall@example.com",))),
])
def test_shell_job_fields(py_result, workflow, job, fields):
    parsed = job_of(py_result, workflow, job)
    assert (parsed.max_attempts, parsed.retry_delay_sec, parsed.warn_timeout_sec,
            parsed.abort_timeout_sec, parsed.emails) == fields
    assert parsed.cleanup_template is None


def test_json_jobs_get_only_max_attempts_emails_and_priority(json_result):
    # Pinball builds a JSON job's template with max_attempts, emails and priority only:
    # retry_delay_sec (300 in the file) and the optional timeouts do not reach the job.
    extract = job_of(json_result, "json_daily_rollup", "RollupExtractJob")
    assert (extract.max_attempts, extract.retry_delay_sec) == (2, 0)
    counts = job_of(json_result, "json_daily_rollup", "RollupCountsJob")
    assert (counts.warn_timeout_sec, counts.abort_timeout_sec) == (None, None)
    assert counts.emails == ("data-oncall@example.com",)


# --- PinballConfig.DEFAULT_EMAIL ----------------------------------------------------------------


def test_default_email_comes_from_the_yaml(py_result):
    hourly = workflow_of(py_result, "hourly_metrics")
    assert hourly.notify_emails == ("pinball-alerts@example.com",)
    assert hourly.schedule.emails == ("pinball-alerts@example.com",)
    assert job_of(py_result, "weekly_cleanup", "rotate_logs").emails == \
        ("pinball-alerts@example.com",)


def test_default_email_follows_the_yaml_value(sandbox, tmp_path):
    repo = write_repo(tmp_path, {
        "email_defs/__init__.py": "",
        "email_defs/workflows.py": '''
            from datetime import datetime, timedelta

            from pinball.config.pinball_config import PinballConfig
            from pinball_ext.job_templates import CommandJobTemplate
            from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

            WORKFLOWS = {
                'mailer': WorkflowConfig(
                    jobs={'a': JobConfig(CommandJobTemplate('a', 'echo a'))},
                    final_job_config=JobConfig(CommandJobTemplate('final', 'echo done')),
                    schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1)),
                    notify_emails=PinballConfig.DEFAULT_EMAIL),
            }
        ''',
        "pinball.yaml": '''
            parser: pinball_ext.workflow.parser.PyWorkflowParser
            parser_params:
              workflows_config: email_defs.workflows.WORKFLOWS
            default_email: someone-else@example.org
        ''',
    })
    result = parse_repo(sandbox, repo, "mail")
    assert result.errors == ()
    assert workflow_of(result, "mailer").notify_emails == ("someone-else@example.org",)


# --- schedules (sections 2 and 5) -----------------------------------------------------------------


@pytest.mark.parametrize(("workflow", "schedule"), [
    ("daily_reporting", Schedule(1420092000, 86400, OverrunPolicy.DELAY_UNTIL_SUCCESS, 2,
                                 ("reporting-oncall@example.com", "analytics@example.com"))),
    ("hourly_metrics", Schedule(1420070700, 3600, OverrunPolicy.START_NEW, 4,
                                ("pinball-alerts@example.com",))),
    ("event_ingest", Schedule(1420070400, 25200, OverrunPolicy.ABORT_RUNNING, 1,
                              ("ingest-oncall@example.com",))),
    ("partner_ingest", Schedule(1420079400, 86400, OverrunPolicy.DELAY, 3,
                                ("ingest-oncall@example.com", "partners@example.com"))),
    ("weekly_cleanup", Schedule(1420340400, 604800, OverrunPolicy.SKIP, 1,
                                ("platform-oncall@example.com",))),
    # overrun_policy=None -> SKIP, max_running_instances=None -> 3, notify_emails=None
    ("db_backup", Schedule(1420074900, 86400, OverrunPolicy.SKIP, 3, ())),
    # neither given
    ("failure_drill", Schedule(1420102800, 43200, OverrunPolicy.SKIP, 3, ())),
])
def test_python_schedules(py_result, workflow, schedule):
    assert workflow_of(py_result, workflow).schedule == schedule


def test_notify_emails_are_split_on_commas(py_result):
    assert workflow_of(py_result, "daily_reporting").notify_emails == (
        "reporting-oncall@example.com", "analytics@example.com")


@pytest.mark.parametrize(("workflow", "schedule"), [
    # "06.30.00.000", "1d", "DELAY"; JSON schedules always allow 3 running instances
    ("json_daily_rollup", Schedule(1420093800, 86400, OverrunPolicy.DELAY, 3,
                                   ("data-oncall@example.com",))),
    ("json_heartbeat", Schedule(1420071300, 1800, OverrunPolicy.SKIP, 3, ())),
    ("json_table_sync", Schedule(1420070400, 43200, OverrunPolicy.START_NEW, 3,
                                 ("data-oncall@example.com",))),
    ("json_weekly_compaction", Schedule(1420426800, 604800, OverrunPolicy.ABORT_RUNNING, 3,
                                        ("data-oncall@example.com",))),
])
def test_json_schedules(json_result, workflow, schedule):
    parsed = workflow_of(json_result, workflow)
    assert parsed.schedule == schedule
    assert parsed.notify_emails == schedule.emails


def json_job(workflow: str, job: str) -> str:
    return json.dumps({
        "workflow": workflow, "job": job, "is_condition": False,
        "template": "pinball_ext.job_templates.JobTemplate",
        "template_params": {"job_repo_dir": "/srv/jobs", "job_import_dirs_config": "jobs.D"},
        "parents": [], "emails": [], "max_attempts": 1, "retry_delay_sec": 0, "priority": 1,
    })


def json_schedule(workflow: str, **fields) -> str:
    schedule = {"workflow": workflow, "start_date": "2015-01-01", "time": "00.00.00.000",
                "recurrence": "1d", "overrun_policy": "SKIP", "emails": []}
    schedule.update(fields)
    return json.dumps(schedule)


def test_json_recurrence_strings_and_times_ignoring_seconds(sandbox, tmp_path):
    cases = {
        # workflow: (schedule fields, reference epoch, recurrence seconds)
        "days": ({"recurrence": "1d", "time": "06.30.59.999"}, 1420093800, 86400),
        "hours": ({"recurrence": "12H", "time": "23.05.01.000"}, 1420153500, 43200),
        "minutes": ({"recurrence": "30M", "time": "00.15.30.500"}, 1420071300, 1800),
        "weeks": ({"recurrence": "1w", "start_date": "2015-01-05", "time": "03.00.00.000"},
                  1420426800, 604800),
        "two_days": ({"recurrence": "2d", "start_date": "2015-02-28", "time": "12.00.00.000"},
                     1425124800, 172800),
        "delay": ({"overrun_policy": "DELAY_UNTIL_SUCCESS"}, 1420070400, 86400),
    }
    files = {}
    for name, (fields, _, _) in cases.items():
        files[f"repo/workflow/{name}/schedule"] = json_schedule(name, **fields)
        files[f"repo/workflow/{name}/job/step"] = json_job(name, "step")
    repo = write_repo(tmp_path, files)
    result = sandbox.parse("json_scratch", str(repo), JSON_PARSER, {"repository_root": "repo"})
    assert result.errors == ()
    for name, (_, reference, recurrence) in cases.items():
        schedule = workflow_of(result, name).schedule
        assert (schedule.reference_epoch, schedule.recurrence_seconds) == \
            (reference, recurrence), name
    assert workflow_of(result, "delay").schedule.overrun_policy is \
        OverrunPolicy.DELAY_UNTIL_SUCCESS


def test_json_empty_start_date_keeps_the_time_of_day_on_the_grid(sandbox, tmp_path):
    repo = write_repo(tmp_path, {
        "workflow/today/schedule": json_schedule("today", start_date="", time="06.30.00.000",
                                                 recurrence="1H"),
        "workflow/today/job/step": json_job("today", "step"),
    })
    result = sandbox.parse("json_scratch", str(repo), JSON_PARSER, {})
    assert result.errors == ()
    schedule = workflow_of(result, "today").schedule
    # Pinball starts "today at 06:30"; any day gives the same hourly grid at :30.
    assert schedule.reference_epoch % 3600 == 1800
    assert schedule.recurrence_seconds == 3600


# --- tokens (section 4) --------------------------------------------------------------------------


def test_run_tokens_of_daily_reporting(py_result):
    tokens = run_tokens(workflow_of(py_result, "daily_reporting"), RUN_EPOCH)
    assert (tokens.workflow, tokens.run_epoch, tokens.instance, tokens.end_date) == \
        ("daily_reporting", RUN_EPOCH, INSTANCE, END_DATE)
    assert [token.name for token in tokens.jobs] == [
        "/workflow/daily_reporting/1422835201000/job/waiting/engagement_report",
        "/workflow/daily_reporting/1422835201000/job/waiting/final",
        "/workflow/daily_reporting/1422835201000/job/waiting/job_code_deployed",
        "/workflow/daily_reporting/1422835201000/job/waiting/load_events",
        "/workflow/daily_reporting/1422835201000/job/waiting/publish_dashboard",
        "/workflow/daily_reporting/1422835201000/job/waiting/revenue_report",
    ]
    assert tokens.events == (EventToken(
        name="/workflow/daily_reporting/1422835201000/input/job_code_deployed/"
             "__WORKFLOW_START__/workflow_start_event",
        job="job_code_deployed"),)
    assert tokens.schedule == ScheduleToken(
        name="/schedule/workflow/daily_reporting",
        next_run_epoch=1422856800,  # 2015-02-02 06:00
        recurrence_seconds=86400,
        overrun_policy=OverrunPolicy.DELAY_UNTIL_SUCCESS,
        workflow="daily_reporting",
        emails=("reporting-oncall@example.com", "analytics@example.com"),
        max_running_instances=2,
    )
    by_job = {token.job: token for token in tokens.jobs}
    assert by_job["revenue_report"] == JobToken(
        name="/workflow/daily_reporting/1422835201000/job/waiting/revenue_report",
        job="revenue_report",
        payload_name="RevenueReportJob",
        inputs=("load_events",),
        outputs=("publish_dashboard",),
        emails=("reporting-oncall@example.com",),
        max_attempts=2,
        retry_delay_sec=0,
        warn_timeout_sec=None,
        abort_timeout_sec=None,
        command='cd . && python -m pinball_ext.job.job_runner '
                '--job_import_dirs_config=example_workflows.job_config.JOB_IMPORT_DIRS '
                '--job_class_name=RevenueReportJob '
                '--job_params="env=example,end_date=2015-02-01" --executor=emr '
                '--executor_config="cluster_id=j-EXAMPLE0001,queue=reporting" '
                '--write_lock=reporting_db ',
        cleanup_template=None,
        is_condition=False,
        priority=3.0,
    )
    assert by_job["job_code_deployed"] == JobToken(
        name="/workflow/daily_reporting/1422835201000/job/waiting/job_code_deployed",
        job="job_code_deployed",
        payload_name="job_code_deployed",
        inputs=("__WORKFLOW_START__",),
        outputs=("load_events",),
        emails=(),
        max_attempts=12,
        retry_delay_sec=600,
        warn_timeout_sec=None,
        abort_timeout_sec=None,
        command="test -e example_jobs",
        cleanup_template=None,
        is_condition=True,
        priority=0.0,
    )


@pytest.mark.parametrize(("workflow", "events"), [
    ("weekly_cleanup", ["rotate_logs", "vacuum_tables"]),
    ("event_ingest", ["fetch_logs"]),
    ("hourly_metrics", ["compute_hourly_metrics"]),
])
def test_event_tokens_for_top_level_jobs(py_result, workflow, events):
    tokens = run_tokens(workflow_of(py_result, workflow), RUN_EPOCH)
    assert [event.name for event in tokens.events] == [
        f"/workflow/{workflow}/1422835201000/input/{job}/__WORKFLOW_START__/"
        "workflow_start_event" for job in events]
    assert [event.job for event in tokens.events] == events


def test_json_run_tokens(json_result):
    tokens = run_tokens(workflow_of(json_result, "json_daily_rollup"), RUN_EPOCH)
    assert tokens.instance == INSTANCE
    assert [event.name for event in tokens.events] == [
        "/workflow/json_daily_rollup/1422835201000/input/input_ready/__WORKFLOW_START__/"
        "workflow_start_event"]
    assert [token.name for token in tokens.jobs] == [
        "/workflow/json_daily_rollup/1422835201000/job/waiting/RollupCountsJob",
        "/workflow/json_daily_rollup/1422835201000/job/waiting/RollupExtractJob",
        "/workflow/json_daily_rollup/1422835201000/job/waiting/RollupPublishJob",
        "/workflow/json_daily_rollup/1422835201000/job/waiting/RollupUsersJob",
        "/workflow/json_daily_rollup/1422835201000/job/waiting/input_ready",
    ]
    condition = next(token for token in tokens.jobs if token.job == "input_ready")
    assert condition.is_condition is True
    assert condition.cleanup_template == 'echo "cleaning up input_ready"'
    assert condition.inputs == ("__WORKFLOW_START__",)
    assert condition.outputs == ("RollupExtractJob",)


@pytest.mark.parametrize(("workflow", "next_run"), [
    ("daily_reporting", 1422856800),  # 2015-02-02 06:00
    ("hourly_metrics", 1422835500),  # 00:05
    ("event_ingest", 1422842400),  # 02:00, the 7-hour grid from 2015-01-01 00:00
    ("partner_ingest", 1422844200),  # 02:30
    ("weekly_cleanup", 1423364400),  # Sunday 2015-02-08 03:00
    ("db_backup", 1422839700),  # 01:15
    ("failure_drill", 1422867600),  # 09:00
])
def test_schedule_token_next_run(py_result, workflow, next_run):
    schedule = run_tokens(workflow_of(py_result, workflow), RUN_EPOCH).schedule
    assert schedule.name == f"/schedule/workflow/{workflow}"
    assert schedule.next_run_epoch == next_run


@pytest.mark.parametrize(("workflow", "next_run"), [
    ("json_daily_rollup", 1422858600),  # 06:30
    ("json_heartbeat", 1422836100),  # 00:15
    ("json_table_sync", 1422878400),  # 12:00
    ("json_weekly_compaction", 1422846000),  # Monday 2015-02-02 03:00
])
def test_json_schedule_token_next_run(json_result, workflow, next_run):
    schedule = run_tokens(workflow_of(json_result, workflow), RUN_EPOCH).schedule
    assert schedule.next_run_epoch == next_run
    assert schedule.max_running_instances == 3


def test_next_run_is_strictly_after_a_run_on_the_grid(py_result):
    workflow = workflow_of(py_result, "daily_reporting")
    assert run_tokens(workflow, 1422856800).schedule.next_run_epoch == 1422943200
    # before the reference time the next run is the reference itself
    assert run_tokens(workflow, 1400000000).schedule.next_run_epoch == 1420092000


# --- determinism, round trip, source files, definition sites ------------------------------------


def test_two_parses_give_equal_results_and_tokens(sandbox, py_result, json_result):
    for repo, cluster, first in [(PYTHON_REPO, "example_python", py_result),
                                 (JSON_REPO, "example_json", json_result)]:
        second = parse_repo(sandbox, repo, cluster)
        assert second.workflows == first.workflows
        assert second.errors == first.errors
        assert second.files == first.files
        for old, new in zip(first.workflows, second.workflows, strict=True):
            assert run_tokens(old, RUN_EPOCH) == run_tokens(new, RUN_EPOCH)


def test_tokens_for_the_same_run_are_identical(py_result):
    workflow = workflow_of(py_result, "weekly_cleanup")
    assert run_tokens(workflow, RUN_EPOCH) == run_tokens(workflow, RUN_EPOCH)
    assert run_tokens(workflow, RUN_EPOCH) != run_tokens(workflow, RUN_EPOCH + 86400)


@pytest.mark.parametrize("which", ["py_result", "json_result", "scratch_result"])
def test_model_round_trips_through_plain_data(request, which):
    result = request.getfixturevalue(which)
    plain = json.loads(json.dumps(to_plain(result)))
    assert from_plain(ParseResult, plain) == result
    for workflow in result.workflows:
        tokens = run_tokens(workflow, RUN_EPOCH)
        assert from_plain(RunTokens, json.loads(json.dumps(to_plain(tokens)))) == tokens


def test_from_plain_rejects_a_malformed_value(py_result):
    plain = to_plain(py_result)
    plain["workflows"][0]["jobs"][0]["score"] = "high"
    with pytest.raises(TypeError, match=r"score: expected float, got str"):
        from_plain(ParseResult, plain)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_python_source_files_are_the_modules_read(py_result):
    modules = ["example_workflows/__init__.py", "example_workflows/ingest.py",
               "example_workflows/maintenance.py", "example_workflows/reporting.py",
               "example_workflows/templates.py", "example_workflows/workflows.py"]
    assert py_result.files == tuple(
        SourceFile(path, sha256_of(PYTHON_REPO / path)) for path in modules)


def test_json_source_files_are_the_files_and_listings_read(json_result):
    def listing(folder: str) -> SourceFile:
        names = sorted(p.name for p in (JSON_REPO / folder).iterdir())
        return SourceFile(folder + "/", hashlib.sha256("\n".join(names).encode()).hexdigest())

    expected = [SourceFile("json_templates.py", sha256_of(JSON_REPO / "json_templates.py")),
                listing("repo/workflow")]
    for workflow in sorted(p.name for p in (JSON_REPO / "repo/workflow").iterdir()):
        folder = f"repo/workflow/{workflow}"
        expected.append(listing(f"{folder}/job"))
        for job in sorted(p.name for p in (JSON_REPO / folder / "job").iterdir()):
            expected.append(SourceFile(f"{folder}/job/{job}",
                                       sha256_of(JSON_REPO / folder / "job" / job)))
        expected.append(SourceFile(f"{folder}/schedule",
                                   sha256_of(JSON_REPO / folder / "schedule")))
    assert json_result.files == tuple(sorted(expected, key=lambda source: source.path))
    assert len(json_result.files) == 20


@pytest.mark.parametrize(("workflow", "job", "file", "line", "text"), [
    ("daily_reporting", "", "example_workflows/reporting.py", 51,
     "'daily_reporting': WorkflowConfig("),
    ("daily_reporting", "job_code_deployed", "example_workflows/reporting.py", 18,
     "'job_code_deployed': JobConfig("),
    ("daily_reporting", "publish_dashboard", "example_workflows/reporting.py", 36,
     "'publish_dashboard': JobConfig("),
    ("daily_reporting", "final", "example_workflows/reporting.py", 53,
     "final_job_config=JobConfig("),
    ("event_ingest", "", "example_workflows/ingest.py", 53, "'event_ingest': WorkflowConfig("),
    ("event_ingest", "notify_child", "example_workflows/ingest.py", 35,
     "'notify_child': JobConfig("),
    ("db_backup", "", "example_workflows/maintenance.py", 63, "'db_backup': WorkflowConfig("),
    ("db_backup", "final", "example_workflows/maintenance.py", 65,
     "final_job_config=JobConfig(CommandJobTemplate('final', 'echo backup done')),"),
    ("failure_drill", "always_fails", "example_workflows/maintenance.py", 44,
     "'always_fails': JobConfig("),
])
def test_file_and_line_point_at_the_definition(py_result, workflow, job, file, line, text):
    parsed = workflow_of(py_result, workflow)
    located = parsed.job(job) if job else parsed
    assert (located.file, located.line) == (file, line)
    source_line = (PYTHON_REPO / file).read_text().splitlines()[line - 1]
    assert source_line.strip() == text


def test_json_files_of_workflows_and_jobs(json_result):
    rollup = workflow_of(json_result, "json_daily_rollup")
    assert (rollup.file, rollup.line) == ("repo/workflow/json_daily_rollup/schedule", 0)
    assert {job.name: (job.file, job.line) for job in rollup.jobs} == {
        name: (f"repo/workflow/json_daily_rollup/job/{name}", 0)
        for name in ["RollupCountsJob", "RollupExtractJob", "RollupPublishJob",
                     "RollupUsersJob", "input_ready"]}
