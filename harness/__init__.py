"""The harness: runs experiments against the fake stream and Airflow, and measures them."""
