"""A fingerprint is the layout and nothing else: source positions stay out of it."""

from __future__ import annotations

from tests.helpers import example_clusters, metric, scrape, wait_for
from token_fetcher._proto import token_fetcher_pb2 as pb

PY = "example_python"


def specs(stub, cluster: str) -> dict[str, pb.GetWorkflowSpecResponse]:
    listing = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=cluster))
    return {
        summary.name: stub.GetWorkflowSpec(
            pb.GetWorkflowSpecRequest(cluster=cluster, workflow=summary.name)
        )
        for summary in listing.workflows
    }


def parse_count(server, cluster: str) -> float:
    return metric(scrape(server.metrics_port), "token_fetcher_parses_total", 0.0,
                  cluster=cluster)


def test_a_line_shift_above_a_workflow_keeps_its_fingerprint(
    start_server, stub_for, example_copy, tmp_path
):
    repo = example_copy("python_repo")
    clusters = example_clusters(repo, example_copy("json_repo"))
    server = start_server(clusters=clusters)
    stub = stub_for(server)
    before = specs(stub, PY)
    module = repo / "example_workflows" / "maintenance.py"
    shifted = {
        name
        for name, answer in before.items()
        if answer.spec.source.file.endswith("maintenance.py")
    }
    assert shifted, "the example defines workflows in maintenance.py"

    loads = parse_count(server, PY)
    module.write_text("# A comment that moves every line below it.\n" + module.read_text())
    wait_for(lambda: parse_count(server, PY) > loads, message="the re-parse of the edit")
    after = specs(stub, PY)
    assert {n: a.fingerprint for n, a in after.items()} == {
        n: a.fingerprint for n, a in before.items()
    }

    # A server that parses the edited repo from scratch sees the new lines, and still
    # gives the same fingerprints.
    fresh = start_server(clusters=clusters, state_dir=tmp_path / "fresh")
    again = specs(stub_for(fresh), PY)
    assert {n: a.fingerprint for n, a in again.items()} == {
        n: a.fingerprint for n, a in before.items()
    }
    for name in shifted:
        assert again[name].spec.source.line == before[name].spec.source.line + 1
        assert [job.source.line for job in again[name].spec.jobs] == [
            job.source.line + 1 if job.source.file.endswith("maintenance.py") else job.source.line
            for job in before[name].spec.jobs
        ]
