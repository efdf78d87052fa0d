"""``python -m search.tracking import mlflow_pending.jsonl``: send what an MLflow outage spooled."""

import sys

from search.tracking.writer import import_pending

if len(sys.argv) == 3 and sys.argv[1] == "import":
    print(f"sent {import_pending(sys.argv[2])} records to MLflow")
else:
    print("usage: python -m search.tracking import mlflow_pending.jsonl", file=sys.stderr)
    sys.exit(2)
