"""Template processor: sums a column of a CSV table, scaled by a factor.

Reads <wd>/parameters ({"factor": number}) and <wd>/table (CSV with a header row and a numeric column "value"),
writes <wd>/result ({"total": ..., "rows": ...}). Replace `run` with your own work."""

import csv
import json
import os
import sys

# -- trigger helpers: the same lines as saas.sdk.adapter prints (adapters run in their own environment, so they
#    do not import saas). stdout is read line by line by the RTI.


def print_progress(progress):
    print(f"trigger:progress:{max(0, min(100, int(progress)))}", flush=True)


def print_output(name):
    print(f"trigger:output:{name}", flush=True)


def print_message(severity, text):
    print(f"trigger:message:{severity}:{' '.join(str(text).splitlines())}", flush=True)


def run(wd):
    with open(os.path.join(wd, "parameters")) as f:
        factor = json.load(f)["factor"]
    print_progress(10)
    total, rows = 0.0, 0
    with open(os.path.join(wd, "table"), newline="") as f:
        for row in csv.DictReader(f):
            total += float(row["value"]) * factor
            rows += 1
    print_progress(80)
    with open(os.path.join(wd, "result"), "w") as f:
        json.dump({"total": total, "rows": rows}, f)
    print_output("result")  # announce each output once its file is complete
    print_message("info", f"summed {rows} rows")
    print_progress(100)


if __name__ == "__main__":
    run(sys.argv[1])
