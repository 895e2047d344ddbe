#!/bin/bash
# Runs once when the processor is deployed, in this folder, with the configuration as $1.
# Install what processor.py needs here. A non-zero exit fails the deployment (the log tail is shown).
set -e
if [ "$1" == "default" ]; then
    echo "Installing for the default configuration"
    if [ -s requirements.txt ] && grep -qv '^\s*#' requirements.txt; then
        python3 -m venv .venv
        .venv/bin/python -m pip install --quiet -r requirements.txt
    fi
    exit 0
else
    echo "Unknown configuration: $1" >&2
    exit 1
fi
