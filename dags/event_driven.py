"""event_driven: Airflow 3's event-driven scheduling: no task streams (Airflow 3 only).

An asset watcher in the triggerer listens to the ingester's Redis pub/sub channel; each
message (a batch of tweets) becomes an asset event, and a DAG run commits the tweets of
its events, idempotently. Logic: harness/task/variants/event_driven.py.
"""

from harness.airflow.dag_factory import build_dag

dag = build_dag("event_driven", doc_md=__doc__)
