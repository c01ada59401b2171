"""The seed's validate-and-load step (shared/reference/airflow-seed.md), timed.

Reads the CSV with pandas.read_csv, checks the required columns as the seed did, and writes it
with DataFrame.to_sql(if_exists='replace', index=False) into TABLE of the same database the
validator loads. Prints one JSON result line in the format of the bench/datapath harness.

With --row-by-row the engine sends one INSERT per row (psycopg2's executemany), as SQLAlchemy did
before 1.4 batched inserts: the seed on an older Airflow stack, for context only.
"""
import argparse
import json
import os
import resource
import time
import warnings

import pandas as pd
import sqlalchemy


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True, help="postgres:// URL")
    ap.add_argument("--csv", required=True)
    ap.add_argument("--table", default="seed_staging_orders")
    ap.add_argument("--size", default="")
    ap.add_argument("--rep", type=int, default=0)
    ap.add_argument("--row-by-row", action="store_true", help="one INSERT per row (no insertmanyvalues)")
    a = ap.parse_args()

    url = a.db.replace("postgres://", "postgresql+psycopg2://", 1)
    engine = sqlalchemy.create_engine(url, use_insertmanyvalues=not a.row_by_row)
    start = time.monotonic()
    df = pd.read_csv(a.csv)
    read = time.monotonic() - start
    required = {"order_id", "customer_id", "amount", "updated_at"}
    if not required.issubset(df.columns):
        raise ValueError(f"Missing cols: {required - set(df.columns)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df.to_sql(a.table, engine, if_exists="replace", index=False)
    total = time.monotonic() - start
    with engine.connect() as c:
        rows = c.execute(sqlalchemy.text(f'SELECT count(*) FROM "{a.table}"')).scalar()
    engine.dispose()
    print(json.dumps({
        "name": "seed_pandas_rows" if a.row_by_row else "seed_pandas", "size": a.size, "rep": a.rep, "rows": rows,
        "bytes": os.path.getsize(a.csv), "seconds": total,
        "read_csv_seconds": read,
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }))


if __name__ == "__main__":
    main()
