#!/bin/bash
# An agent that misbehaves on purpose (for tests): see agent.py.
if [ "$1" == "default" ]; then
    exec python3 agent.py "$2"
else
    exit 1
fi
