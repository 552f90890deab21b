"""multiprocess: the article's advice against the GIL, as an Airflow DAG.

One reader hands raw lines to `workers` worker processes through a bounded queue; each
parses, scores and commits its own batches. Compare with `threaded`. Logic:
harness/task/variants/multiprocess.py.
"""

from harness.airflow.dag_factory import build_dag

dag = build_dag("multiprocess", doc_md=__doc__)
