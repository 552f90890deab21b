"""timeout_handling: the article's example 3, as an Airflow DAG.

Sets `execution_timeout` and its own SIGTERM handler raising a custom `TimeoutError` that
the loop catches before returning. Airflow's timeout is SIGALRM + `AirflowTaskTimeout`, which
the handler never sees; a SIGTERM makes the task succeed. Logic:
harness/task/variants/timeout_handling.py.
"""

from harness.airflow.dag_factory import build_dag

dag = build_dag("timeout_handling", doc_md=__doc__)
