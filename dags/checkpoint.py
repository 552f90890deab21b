"""checkpoint: the article's example 2, as an Airflow DAG.

Resumes with `since_id` from a JSON state file on the worker's local disk, written after
each batch with a plain `open(..., "w")` + `json.dump`. A retry on another worker starts
over; a crash between commit and write repeats tweets; a torn file breaks every later try.
Logic: harness/task/variants/checkpoint.py.
"""

from harness.airflow.dag_factory import build_dag

dag = build_dag("checkpoint", doc_md=__doc__)
