"""exactly_once: what a careful engineer ships, as an Airflow DAG.

Micro-batches committed with their checkpoint in one transaction in the shared sink,
idempotent by tweet id, resumed with `since_id`; each try exits cleanly well before its
`execution_timeout` and stops on `on_kill`; `@continuous` with `max_active_runs=1` so the
next run picks up at the last commit. Logic: harness/task/variants/exactly_once.py.
"""

from harness.airflow.dag_factory import build_dag

dag = build_dag("exactly_once", doc_md=__doc__)
