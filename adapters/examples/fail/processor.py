"""Always fails: writes a reason to stderr and exits with code 3."""

import sys

print("trigger:progress:10", flush=True)
print("something went badly wrong", file=sys.stderr, flush=True)
sys.exit(3)
