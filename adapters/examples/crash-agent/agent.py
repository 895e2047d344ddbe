"""c = a + b, speaking the agent protocol by hand (no helper), and misbehaving on purpose when a's "v" is
13: crashes (exit 13), 14: hangs (for the per-job timeout), 15: reports an error, 16: hangs with a child process
(for cancel). Each job starts a line "pid <pid>" on stderr."""

import json
import os
import subprocess
import sys
import time

print("trigger:ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    wd = job["wd"]
    print(f"pid {os.getpid()} job {job['job_id']}", file=sys.stderr, flush=True)
    with open(os.path.join(wd, "a")) as f:
        a = json.load(f)["v"]
    with open(os.path.join(wd, "b")) as f:
        b = json.load(f)["v"]
    if a == 13:
        print("crashing on purpose", file=sys.stderr, flush=True)
        os._exit(13)
    if a == 14:
        time.sleep(3600)
    if a == 15:
        print("trigger:error:a must not be 15", flush=True)
        continue
    if a == 16:
        child = subprocess.Popen(["sleep", "300"])
        with open(os.path.join(wd, "child.pid"), "w") as f:
            f.write(str(child.pid))
        time.sleep(3600)
    with open(os.path.join(wd, "c"), "w") as f:
        json.dump({"v": a + b}, f)
    print("trigger:output:c", flush=True)
    print("trigger:done", flush=True)
