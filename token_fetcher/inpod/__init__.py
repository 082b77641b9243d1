"""The in-pod mode's parts that need no Airflow: the hand-over between the worker
container and the legacy container (``runner`` on the legacy side, standalone;
``handover`` on the worker side), the resource history and its recommendations
(``resources``), and the worker pod's template and per-task override as plain
manifests (``pod``). See docs/airflow.md, "Three ways to run a job".
"""
