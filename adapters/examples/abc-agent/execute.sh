#!/bin/bash
# An agent: started once per instance with $1 the configuration and $2 the instance's own folder; it stays running
# and takes jobs on stdin (see agent.py).
if [ "$1" == "default" ]; then
    exec python3 agent.py "$2"
else
    echo "Unknown configuration: $1" >&2
    exit 1
fi
