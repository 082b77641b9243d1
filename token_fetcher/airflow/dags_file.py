"""Airflow DAGs for legacy Pinball workflows migrated with token-fetcher.

Drop this file into the Airflow dags folder (``token-fetcher airflow write-loader DIR``).
It builds one DAG per migration metadata file found under ``[token_fetcher]
migrations_dir`` (default ``<dags folder>/migrations``; env var
``AIRFLOW__TOKEN_FETCHER__MIGRATIONS_DIR``), with the dag_id ``<cluster>__<workflow>``.
Settings are read from the ``[token_fetcher]`` section of the Airflow config; see the
token-fetcher docs (docs/airflow.md).
"""

from token_fetcher.airflow.loader import load_dags

load_dags(globals())
