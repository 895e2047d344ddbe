"""Runs long (input a's "v" seconds, default 30), reporting progress every 0.1 s, and starts a child process so a
cancel must kill the whole process group. Then writes c = a + b."""

import json
import os
import subprocess
import sys
import time

wd = sys.argv[1]
with open(os.path.join(wd, "a")) as f:
    a = json.load(f)["v"]
with open(os.path.join(wd, "b")) as f:
    b = json.load(f)["v"]
child = subprocess.Popen(["sleep", "300"])
with open(os.path.join(wd, "child.pid"), "w") as f:
    f.write(str(child.pid))
print(f"started child {child.pid}", flush=True)
duration = float(a) if a > 0 else 30.0
start = time.monotonic()
while time.monotonic() - start < duration:
    progress = int(100 * (time.monotonic() - start) / duration)
    print(f"trigger:progress:{progress}", flush=True)
    print(f"working... {progress}%", flush=True)
    time.sleep(0.1)
child.kill()
with open(os.path.join(wd, "c"), "w") as f:
    json.dump({"v": a + b}, f)
print("trigger:output:c", flush=True)
print("trigger:progress:100", flush=True)
