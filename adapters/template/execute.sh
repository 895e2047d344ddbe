#!/bin/bash
# Runs once per job, in this folder: $1 is the configuration, $2 the job's working directory (inputs are files
# named after the inputs; write each output as a file named after it). A non-zero exit fails the job.
if [ "$1" == "default" ]; then
    PYTHON=python3
    [ -x .venv/bin/python ] && PYTHON=.venv/bin/python
    exec "$PYTHON" processor.py "$2"
else
    echo "Unknown configuration: $1" >&2
    exit 1
fi
