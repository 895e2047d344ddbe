"""Writes output c but forgets to announce it (no trigger:output:c): the job must fail."""

import json
import os
import sys

wd = sys.argv[1]
with open(os.path.join(wd, "c"), "w") as f:
    json.dump({"v": 0}, f)
print("trigger:progress:100", flush=True)
