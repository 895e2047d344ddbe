#!/bin/bash
# A hostile agent (tests only): $1 configuration, $2 the instance's folder; jobs arrive on stdin.
# It shares ../hostile/attack.py (the repository must hold the hostile folder too: the whole repository is visible).
echo "trigger:ready"
exec python3 ../hostile/attack.py agent
