"""queue_decoupled: the article's external-queue advice, as an Airflow DAG.

An ingester outside Airflow (harness/task/ingester.py) feeds a Redis Stream; this task reads it
in the consumer group `airflow`, commits idempotently, then `XACK`s, and first claims what
a dead consumer left pending (`XAUTOCLAIM`). Logic: harness/task/variants/queue_decoupled.py.
"""

from harness.airflow.dag_factory import build_dag

dag = build_dag("queue_decoupled", doc_md=__doc__)
