"""What a DAG shows of its layout's state, and what it leaves out: a stale or dynamic
workflow is tagged and has a banner in its docs; source lines are not in the DAG, so a
line shift makes no new DAG version."""

from __future__ import annotations

from dataclasses import replace

from airflow.serialization.serialized_objects import DagSerialization
from test_dag_building import layout

from token_fetcher.airflow.dags import DYNAMIC_TAG, STALE_TAG, build_dag
from token_fetcher.airflow.settings import Settings


def serialized(the_layout) -> dict:
    return DagSerialization.to_dict(build_dag(the_layout, Settings()))


def test_a_line_shift_leaves_the_serialized_dag_as_it_was():
    before = layout()
    shifted_spec = type(before.spec)()
    shifted_spec.CopyFrom(before.spec)
    shifted_spec.source.file, shifted_spec.source.line = "defs/workflows.py", 40
    for job in shifted_spec.jobs:
        job.source.file, job.source.line = "defs/jobs.py", 10
    located = replace(before, spec=shifted_spec)
    shifted = type(before.spec)()
    shifted.CopyFrom(shifted_spec)
    shifted.source.line = 41
    for job in shifted.jobs:
        job.source.line = 11
    assert serialized(replace(before, spec=shifted)) == serialized(located)
    assert "defs/workflows.py" in build_dag(located, Settings()).doc_md


def test_stale_and_dynamic_layouts_are_tagged_with_a_banner():
    plain = build_dag(layout(), Settings())
    assert not {STALE_TAG, DYNAMIC_TAG} & set(plain.tags)
    assert "**Stale:**" not in plain.doc_md and "**Dynamic:**" not in plain.doc_md

    error = "cycle: a -> b -> a (cluster core, workflow wf, defs.py:7)"
    stale = build_dag(replace(layout(), definition_errors=(error,)), Settings())
    assert STALE_TAG in stale.tags and DYNAMIC_TAG not in stale.tags
    assert stale.doc_md.startswith("> **Stale:** the latest definition of this workflow")
    assert f"> - {error}\n" in stale.doc_md

    dynamic = build_dag(replace(layout(), dynamic=True), Settings())
    assert DYNAMIC_TAG in dynamic.tags and STALE_TAG not in dynamic.tags
    assert dynamic.doc_md.startswith("> **Dynamic:** this workflow's layout changed")
