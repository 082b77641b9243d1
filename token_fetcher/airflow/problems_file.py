"""Import errors for migrated Pinball workflows that give no Airflow DAG (token-fetcher).

TokenFetcherDagBundle keeps this file next to its loader file. Parsing it raises one
error listing every migrated workflow of the bundle's manifest that gives no DAG (a
definition that fails to parse with no good version, a bad metadata file), so Airflow
shows them as an import error of this file (`airflow dags list-import-errors`, the UI,
/api/v2/importErrors). With no such workflow it defines no DAG, and the error is cleared.
"""

from token_fetcher.airflow.loader import raise_problems

raise_problems(__file__)
