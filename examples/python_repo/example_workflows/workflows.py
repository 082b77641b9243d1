"""All workflows of the example repo, as the Pinball parser config names them."""

from example_workflows import ingest, maintenance, reporting

WORKFLOWS = {}
WORKFLOWS.update(reporting.WORKFLOWS)
WORKFLOWS.update(ingest.WORKFLOWS)
WORKFLOWS.update(maintenance.WORKFLOWS)
