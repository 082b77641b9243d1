"""Pinball's command lines against the served ones: equal, equal up to pair order, different.

Literal cases, command lines that CPython 2.7 really prints (where the interpreter is
present: dict order and the pickle round trip that made production's order alternate),
Pinball's own unmodified JobTemplate under CPython 2.7 (where PINBALL_SOURCE names a
checkout of it), and ``token-fetcher compare`` against a real server.
"""

from __future__ import annotations

import calendar
import json
import os
import random
import shutil
import subprocess
from datetime import UTC, datetime

import pytest
from test_fidelity import END_DATE, PY2_CORPUS, PY2_CORPUS_PARAMS, commands

from legacy_parser.equivalence import (
    Comparison,
    LoggedCommand,
    Verdict,
    compare_commands,
    parse_log_line,
)
from legacy_parser.sandbox import Sandbox
from tests.helpers import PY_PARSER, write_repo
from token_fetcher.cli import main
from token_fetcher.client import TokenFetcherClient

RUNNER = ("cd /srv/jobs && python -m pinball_ext.job.job_runner "
          "--job_import_dirs_config=legacy.jobs.JOB_IMPORT_DIRS ")
SERVED = (RUNNER + '--job_class_name=CopyJob --job_params="team=x,region=us,end_date=2015-02-01"'
          ' --executor=emr --executor_config="cluster=emr-ads,queue=etl,pool=2" ')
# What Pinball's own code printed for the same job under CPython 2.7.
PINBALL_27 = (RUNNER + '--job_class_name=CopyJob --job_params="region=us,end_date=2015-02-01,'
              'team=x" --executor=emr --executor_config="queue=etl,cluster=emr-ads,pool=2" ')


def test_the_same_bytes_are_equal():
    assert compare_commands(SERVED, SERVED) == Comparison(Verdict.EQUAL)


def test_pairs_in_another_order_are_equal_up_to_order():
    assert compare_commands(PINBALL_27, SERVED) == Comparison(Verdict.EQUAL_UP_TO_ORDER)


@pytest.mark.parametrize(("pinball", "differences"), [
    (PINBALL_27.replace("end_date=2015-02-01", "end_date=2015-01-31"),
     ["--job_params: end_date is '2015-01-31' in Pinball's command, '2015-02-01' in the "
      "served one"]),
    (PINBALL_27.replace("team=x", "team=x,extra=1"),
     ["--job_params: 'extra=1' only in Pinball's command"]),
    (PINBALL_27.replace(",pool=2", ""),
     ["--executor_config: pool='2' only in the served command"]),
    (PINBALL_27.replace("CopyJob", "MoveJob"),
     ["Pinball's command has '--job_class_name=MoveJob' where the served one has "
      "'--job_class_name=CopyJob'"]),
    (PINBALL_27.replace("--executor=emr ", ""), ["'--executor=emr' only in the served command"]),
    (PINBALL_27.replace('--executor_config="queue=etl,cluster=emr-ads,pool=2" ', ""),
     ["--executor_config: missing from Pinball's command"]),
    (PINBALL_27.rstrip(" "), ["'' only in the served command"]),
])
def test_any_other_difference_is_different_and_shown(pinball, differences):
    assert compare_commands(pinball, SERVED) == \
        Comparison(Verdict.DIFFERENT, tuple(differences))


def test_a_repeated_pair_counts():
    served = 'x --job_params="a=1,b=2" '
    assert compare_commands('x --job_params="b=2,a=1,a=1" ', served).verdict is \
        Verdict.DIFFERENT


@pytest.mark.parametrize(("line", "expected"), [
    ("ads_daily\tload\t2015-02-02T06:30:00\tcd /srv && run \n",
     LoggedCommand("ads_daily", "load", "cd /srv && run ", run_time="2015-02-02T06:30:00")),
    ("/workflow/ads_daily/1422858605123/job/waiting/load cd /srv && run \n",
     LoggedCommand("ads_daily", "load", "cd /srv && run ", instance_ms=1422858605123)),
    ("\n", None),
    ("# a comment\n", None),
])
def test_log_lines(line, expected):
    assert parse_log_line(line) == expected


def test_an_unreadable_log_line_says_what_is_expected():
    with pytest.raises(ValueError, match="workflow<TAB>job<TAB>run time<TAB>command"):
        parse_log_line("INFO running cd /srv && run")


# --- command lines CPython 2.7 prints ------------------------------------------------------

def _python27() -> str:
    candidates = [os.environ.get("PYTHON27", ""),
                  os.path.expanduser("~/.pyenv/versions/2.7.18/bin/python"),
                  shutil.which("python2.7") or ""]
    for candidate in filter(None, candidates):
        try:  # a pyenv shim exists even where its version is not active
            subprocess.run([candidate, "-c", "import sys; sys.exit(sys.version_info[:2] != "
                            "(2, 7))"], capture_output=True, timeout=30, check=True)
        except (OSError, subprocess.SubprocessError):
            continue
        return candidate
    return ""


PYTHON27 = _python27()
needs_python27 = pytest.mark.skipif(
    not PYTHON27, reason="CPython 2.7 not found (set PYTHON27, or install 2.7.18 with pyenv)")

# Pinball's idiom, re-created: the pairs joined in the dict's order, with end_date written
# into the same dict; and again after the pickle round trip the scheduler made after
# every run.
DICT_ORDER_27 = """
import json, pickle, sys
out = []
for pairs in json.load(sys.stdin):
    params = {}
    for key, value in pairs:
        params[str(key)] = str(value)
    params['end_date'] = '2015-02-01'
    again = pickle.loads(pickle.dumps(params))
    out.append([','.join('%s=%s' % (k, v) for k, v in d.iteritems()) for d in (params, again)])
json.dump(out, sys.stdout)
"""
WORDS = ["dt", "region", "team", "mode", "pool", "queue", "cluster", "date", "hour", "env",
         "table", "db", "owner", "retries", "limit", "source", "sink", "bucket"]


def _job_command(pairs: str) -> str:
    return RUNNER + f'--job_class_name=CopyJob --job_params="{pairs}" '


@needs_python27
def test_python27_orders_are_equal_up_to_order_and_mutations_are_caught():
    rng = random.Random(17)
    cases = [[[key, f"v{rng.randrange(100)}"] for key in rng.sample(WORDS, rng.randint(2, 9))]
             for _ in range(300)]
    printed = json.loads(subprocess.run(
        [PYTHON27, "-c", DICT_ORDER_27], input=json.dumps(cases), capture_output=True,
        text=True, timeout=60, check=True).stdout)
    verdicts = []
    for pairs, (first, after_round_trip) in zip(cases, printed, strict=True):
        served = _job_command(",".join(f"{k}={v}" for k, v in pairs) + ",end_date=2015-02-01")
        for pinball in (first, after_round_trip):
            verdicts.append(compare_commands(_job_command(pinball), served).verdict)
        changed = first.replace("end_date=2015-02-01", "end_date=2015-02-02")
        assert compare_commands(_job_command(changed), served).verdict is Verdict.DIFFERENT
        dropped = ",".join(first.split(",")[1:])
        assert compare_commands(_job_command(dropped), served).verdict is Verdict.DIFFERENT
    assert set(verdicts) <= {Verdict.EQUAL, Verdict.EQUAL_UP_TO_ORDER}
    # Python 2 really printed most of them in another order, and the order alternated.
    assert verdicts.count(Verdict.EQUAL_UP_TO_ORDER) > 400
    assert any(first != again for first, again in printed)


PINBALL_SOURCE = os.environ.get("PINBALL_SOURCE", "")
# Runs Pinball's own JobTemplate and the corpus's definitions under CPython 2.7; only the
# third-party modules Pinball's config module imports are stood in for.
PINBALL_27_SCRIPT = """
import json, sys, types
pinball_source, repo = sys.argv[1:3]
sys.path[:0] = [repo, pinball_source]
for name in ('yaml', 'pytz', 'django', 'django.conf'):
    sys.modules[name] = types.ModuleType(name)
sys.modules['django'].conf = sys.modules['django.conf']
sys.modules['django'].VERSION = (1, 8)
sys.modules['django.conf'].settings = types.ModuleType('settings')
params = json.load(sys.stdin)
result_stream, sys.stdout = sys.stdout, sys.stderr  # the definitions print
from legacy.workflows import WORKFLOWS
out = {}
for workflow, config in WORKFLOWS.items():
    for job, job_config in config.jobs.items():
        payload = job_config.template.get_pinball_job([], [], dict(params))
        out['%s/%s' % (workflow, job)] = payload.command
    final = config.final_job_config.template.get_pinball_job([], [], None)
    out['%s/final' % workflow] = final.command
json.dump(out, result_stream)
"""


@needs_python27
@pytest.mark.skipif(not os.path.isfile(os.path.join(PINBALL_SOURCE, "pinball_ext",
                                                    "job_templates.py")),
                    reason="set PINBALL_SOURCE to a checkout of pinterest/pinball to compare "
                           "with its unmodified code")
def test_python27_pinball_commands_equal_the_served_ones_up_to_order(tmp_path):
    repo = write_repo(tmp_path / "repo", PY2_CORPUS)
    params = dict(PY2_CORPUS_PARAMS, end_date=END_DATE)
    printed = json.loads(subprocess.run(
        [PYTHON27, "-c", PINBALL_27_SCRIPT, PINBALL_SOURCE, str(repo)],
        input=json.dumps(params), capture_output=True, text=True, timeout=60,
        check=True).stdout)
    box = Sandbox()
    try:
        served = commands(box.parse("py2", str(repo), PY_PARSER, PY2_CORPUS_PARAMS))
    finally:
        box.close()
    assert sorted(printed) == sorted(served)
    verdicts = {name: compare_commands(printed[name], served[name]).verdict for name in served}
    assert set(verdicts.values()) == {Verdict.EQUAL, Verdict.EQUAL_UP_TO_ORDER}
    assert printed["ads_daily/load"] == PINBALL_27


# --- token-fetcher compare -------------------------------------------------------------------

RUN = "2015-02-02T06:30:00"
INSTANCE_MS = (calendar.timegm((2015, 2, 2, 6, 30, 5)) * 1000) + 123


@pytest.fixture
def corpus_server(start_server, tmp_path):
    repo = write_repo(tmp_path / "py2", PY2_CORPUS)
    return start_server({"legacy": {"repo": str(repo), "parser": PY_PARSER,
                                    "parser_params": PY2_CORPUS_PARAMS}})


def _compare(server, *args: str) -> list[str]:
    return ["compare", "--target", f"127.0.0.1:{server.port}", "--cluster", "legacy", *args]


def test_compare_a_file_of_log_lines(corpus_server, tmp_path, capsys):
    log = tmp_path / "pinball.log"
    log.write_text("\n".join([
        "# from the Pinball workers' logs",
        f"ads_daily\tload\t{RUN}\t{PINBALL_27}",
        f"/workflow/growth_daily/{INSTANCE_MS}/job/waiting/final echo done",
        f"ads_daily\tload\t{RUN}\t{PINBALL_27.replace('pool=2', 'pool=3')}",
        f"ads_daily\tnope\t{RUN}\techo",
        "garbage",
    ]) + "\n")
    assert main(_compare(corpus_server, "--log", str(log))) == 1
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        f"{log}:2: ads_daily/load run 2015-02-02T06:30:00+00:00: equal up to the order of pairs",
        f"{log}:3: growth_daily/final run 2015-02-02T06:30:00+00:00: equal",
        f"{log}:4: ads_daily/load run 2015-02-02T06:30:00+00:00: different",
        "    --executor_config: pool is '3' in Pinball's command, '2' in the served one",
        f"{log}:5: ads_daily/nope run 2015-02-02T06:30:00+00:00: not compared: the workflow "
        "has no job 'nope'",
        f"{log}:6: not compared: expected workflow<TAB>job<TAB>run time<TAB>command, or a job "
        "token name /workflow/<workflow>/<instance>/job/<state>/<job> and the command",
        "1 different, 1 equal, 1 equal up to the order of pairs, 2 not compared",
    ]
    assert "3 of 5 commands differ or could not be compared" in out.err


def test_compare_one_command(corpus_server, capsys):
    args = _compare(corpus_server, "--workflow", "ads_daily", "--job", "load", "--run-time", RUN,
                    "--command", PINBALL_27)
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 equal up to the order of pairs"


def test_compare_needs_a_log_or_a_whole_command(corpus_server, capsys):
    assert main(_compare(corpus_server, "--workflow", "ads_daily")) == 2
    assert "give --log, or all of --workflow, --job, --run-time and --command" in \
        capsys.readouterr().err


def test_recorded_python27_command_is_what_this_corpus_served(corpus_server):
    # Ties the literal above to the served command it is compared with.
    with TokenFetcherClient(f"127.0.0.1:{corpus_server.port}") as client:
        answer = client.get_job_tokens("legacy", "ads_daily",
                                       datetime(2015, 2, 2, 6, 30, tzinfo=UTC), jobs=["load"])
    assert [token.command for token in answer.jobs] == [SERVED]

