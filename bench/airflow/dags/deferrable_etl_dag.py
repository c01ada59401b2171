"""The seed's DAG (shared/reference/airflow-seed.md, dags/deferrable_etl_dag.py) on Airflow 3, for
bench/airflow only: its bugs fixed, nothing else improved. Same steps, same libraries, same order:
deferrable HTTP sensor -> fetch to S3 -> pandas validate + load staging -> create the day's
partition -> `dbt run` -> `dbt docs generate`.

What changed against the seed, and why (bench/airflow/README.md has the list too):
- Airflow 3 names: HttpSensor(deferrable=True) for HttpSensorAsync, `schedule` for
  schedule_interval, the standard provider's operators; no provide_context, days_ago or
  execution_date (gone in Airflow 3); the next day is computed from ds.
- schedule=None: the harness triggers every run (a logical date each), as it does sluice's.
  poke_interval is the harness's (SENSOR_POKE, the same as sluice's sensor), not 60 s.
- The fetch reads the URL of connection source_api instead of a hard-coded host.
- The load replaces the day's slice of staging_orders (delete + append in one transaction) with a
  load_date column: the seed's to_sql(if_exists='replace') drops a table the dbt staging view
  depends on and loads updated_at as text.
- The partition's name and bounds are built from the parsed date and quoted, never raw text.
- dbt: `dbt run` of this project's models (stg_orders, orders) with the vars the project needs
  (the seed's `dbt deps`/`dbt seed` had nothing to do here); `dbt docs generate` without the
  stray `dbt docs serve &`.
- Alerts: the seed's Slack/e-mail callbacks would leave the machine (and its Slack f-string does
  not parse): a failure is logged instead. Airflow 3 has no sla_miss_callback.
"""
import json
import logging
import os
from datetime import date, datetime, timedelta

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.http.sensors.http import HttpSensor
from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, BaseHook

log = logging.getLogger(__name__)

BUCKET = os.environ.get("BENCH_AIRFLOW_BUCKET", "my-etl-bucket")
DBT_PROJECT = os.environ["BENCH_DBT_PROJECT"]
DBT = os.environ["BENCH_DBT"]
DBT_PROFILES = os.environ["BENCH_DBT_PROFILES"]
DBT_TARGET = os.environ["BENCH_DBT_TARGET"]
POKE = float(os.environ.get("BENCH_SENSOR_POKE", "60"))


def notify_failure(context):
    ti = context["task_instance"]
    log.error("DAG %s failed on task %s at %s UTC", context["dag"].dag_id, ti.task_id, datetime.utcnow().isoformat())


default_args = {
    "owner": "data-engineer",
    "depends_on_past": False,
    "retries": 3,
    "retry_delay": timedelta(minutes=10),
    "on_failure_callback": notify_failure,
}

dag = DAG(
    dag_id="deferrable_etl_partition_dbt",
    default_args=default_args,
    description="Deferrable sensor ETL -> S3 -> dbt incremental -> dynamic partitions -> docs",
    schedule=None,
    start_date=datetime(2020, 1, 1),
    catchup=False,
    max_active_runs=1,
)

start = EmptyOperator(task_id="start", dag=dag)

# 1. Deferrable HTTP Sensor
sensor_check = HttpSensor(
    task_id="sensor_check_api",
    http_conn_id="source_api",
    endpoint="data/{{ ds }}.csv",
    method="HEAD",
    poke_interval=POKE,
    timeout=3600,
    soft_fail=False,
    deferrable=True,
    dag=dag,
)


# 2. Fetch & upload to S3
def fetch_and_upload_to_s3(ds, **kwargs):
    import requests

    url = f"{BaseHook.get_connection('source_api').host.rstrip('/')}/data/{ds}.csv"
    resp = requests.get(url, timeout=30)
    resp.raise_for_status()
    s3 = S3Hook(aws_conn_id="aws_default")
    key = f"raw/daily/{ds}.csv"
    s3.load_string(resp.text, key, bucket_name=BUCKET, replace=True)


fetch_task = PythonOperator(task_id="fetch_and_upload_to_s3", python_callable=fetch_and_upload_to_s3, dag=dag)


# 3. Validate & load staging
def validate_and_load_staging(ds, **kwargs):
    from io import StringIO

    import pandas as pd
    import sqlalchemy

    s3 = S3Hook(aws_conn_id="aws_default")
    data = s3.read_key(f"raw/daily/{ds}.csv", bucket_name=BUCKET)
    df = pd.read_csv(StringIO(data), parse_dates=["updated_at"])
    required = {"order_id", "customer_id", "amount", "updated_at"}
    if not required.issubset(df.columns):
        raise ValueError(f"Missing cols: {required - set(df.columns)}")
    df["load_date"] = date.fromisoformat(ds)
    pg = PostgresHook(postgres_conn_id="postgres_default")
    engine = pg.get_sqlalchemy_engine()
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("DELETE FROM staging_orders WHERE load_date = :ds"), {"ds": ds})
        df.to_sql("staging_orders", conn, if_exists="append", index=False)


validate_task = PythonOperator(task_id="validate_and_load_staging", python_callable=validate_and_load_staging, dag=dag)


# 4. Dynamic Partition Creation
def create_partition(ds, **kwargs):
    day = date.fromisoformat(ds)  # a parsed date: the name and bounds below are digits and dashes only
    next_day = day + timedelta(days=1)
    partition = f"{day:%Y_%m_%d}"
    pg = PostgresHook(postgres_conn_id="postgres_default")
    conn = pg.get_conn()
    cursor = conn.cursor()
    cursor.execute(
        f'CREATE TABLE IF NOT EXISTS public."orders_{partition}" PARTITION OF public.orders '
        f"FOR VALUES FROM ('{day.isoformat()}') TO ('{next_day.isoformat()}')"
    )
    conn.commit()
    conn.close()


partition_task = PythonOperator(task_id="create_partition", python_callable=create_partition, dag=dag)

# 5. Run dbt models. The project (sluice's, shared) needs its vars: the run's date, a run id, and a
# fencing token that grows with every run (the project refuses to write without one).
ORDERS_SPEC = {
    "orders": {
        "key": ["order_id"],
        "version": "updated_at",
        "partition": "load_date",
        "grain": "day",
        "columns": ["order_id", "customer_id", "amount", "updated_at"],
        "staging_table": "staging_orders",
    }
}
DBT_ARGS = (
    f"--project-dir {DBT_PROJECT} --profiles-dir {DBT_PROFILES} --target-path {DBT_TARGET}/target "
    f"--log-path {DBT_TARGET}/logs --no-use-colors"
)
DBT_VARS = (
    '--vars "{\\"ds\\": \\"{{ ds }}\\", \\"run_id\\": \\"af_{{ ds_nodash }}_{{ ti.try_number }}\\", '
    '\\"pipeline\\": \\"orders\\", \\"fence\\": $(date +%s%3N), '
    '\\"sluice_pipelines\\": ' + json.dumps(ORDERS_SPEC).replace('"', '\\"') + '}"'
)

dbt_run = BashOperator(
    task_id="run_dbt",
    bash_command=f"cd {DBT_PROJECT} && {DBT} run --select stg_orders orders {DBT_ARGS} {DBT_VARS}",
    dag=dag,
)

# 6. Generate dbt docs
dbt_docs = BashOperator(
    task_id="generate_dbt_docs",
    bash_command=f"cd {DBT_PROJECT} && {DBT} docs generate {DBT_ARGS} {DBT_VARS}",
    dag=dag,
)

end = EmptyOperator(task_id="end", dag=dag)

start >> sensor_check >> fetch_task >> validate_task >> partition_task >> dbt_run >> dbt_docs >> end
