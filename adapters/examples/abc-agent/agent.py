"""The a + b model kept warm: one process serves many jobs and counts them. saas_adapter.py is a copy of
saas/sdk/adapter.py (adapters run in their own environment, so they do not import saas)."""

import json

from saas_adapter import agent_jobs, print_message, print_output

served = 0  # state kept between jobs (a loaded model, an open connection, ...)
for job in agent_jobs():
    with job:
        a = json.loads(job.path("a").read_text())["v"]
        b = json.loads(job.path("b").read_text())["v"]
        job.path("c").write_text(json.dumps({"v": a + b}))
        print_output("c")
        served += 1
        print_message("info", f"{a} + {b} = {a + b} (job {served} of this instance)")
