"""threaded: `multiprocess` with threads instead of processes, as an Airflow DAG.

The reader and the workers share one GIL: the control that shows what the GIL costs a
stream reader. Logic: harness/task/variants/multiprocess.py.
"""

from harness.airflow.dag_factory import build_dag

dag = build_dag("threaded", doc_md=__doc__)
