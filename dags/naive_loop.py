"""naive_loop: the article's example 1, as an Airflow DAG.

Starts reading at the run's logical date, loops forever (`while True`), reconnects "from
now" after a dropped connection, keeps no checkpoint, and catches `Exception` around the
loop, so a broken stream ends the task successfully. Logic: harness/task/variants/naive_loop.py.
"""

from harness.airflow.dag_factory import build_dag

dag = build_dag("naive_loop", doc_md=__doc__)
