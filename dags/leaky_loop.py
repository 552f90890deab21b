"""leaky_loop: naive_loop plus a cache that is never trimmed, as an Airflow DAG.

The memory_limit fault's subject: a long-running task whose memory only grows. Logic:
harness/task/variants/leaky_loop.py.
"""

from harness.airflow.dag_factory import build_dag

dag = build_dag("leaky_loop", doc_md=__doc__)
