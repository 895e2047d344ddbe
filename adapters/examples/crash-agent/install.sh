#!/bin/bash
# Nothing to install for a + b.
if [ "$1" == "default" ]; then
    echo "Installing the a+b agent"
    exit 0
else
    echo "Unknown configuration: $1" >&2
    exit 1
fi
