#!/bin/bash
# A hostile agent (tests only): $1 configuration, $2 the instance's folder; jobs arrive on stdin.
echo "trigger:ready"
exec python3 attack.py agent
