"""scheduled_poll: Airflow's own answer for an API that can be polled: no task streams.

A run every few seconds reads X's recent search from the since_id it stored in the sink at
its last commit, pages through, and commits the tweets with the new since_id in one
transaction, idempotently. Logic: harness/task/variants/scheduled_poll.py.
"""

from harness.airflow.dag_factory import build_dag

dag = build_dag("scheduled_poll", doc_md=__doc__)
