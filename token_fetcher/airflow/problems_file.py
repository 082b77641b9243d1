"""Import errors for migrated Pinball workflows that give no Airflow DAG (token-fetcher).

Keep this file next to the loader file (TokenFetcherDagBundle does so by itself; in the
dags folder, copy it there as token_fetcher_problems.py). Parsing it raises one error
listing every migrated workflow that gives no DAG (a definition that fails to parse with
no good version, a bad metadata file): those of the bundle's manifest, or of the
loader's last full parse. Airflow shows them as an import error of this file (`airflow
dags list-import-errors`, the UI, /api/v2/importErrors). With no such workflow it
defines no DAG, and the error is cleared.
"""

from token_fetcher.airflow.loader import raise_problems

raise_problems(__file__)
