#!/bin/bash
# $1: configuration, $2: working directory (inputs a and b are there; write output c there).
if [ "$1" == "default" ] || [ "$1" == "nscc" ]; then
    echo "Run processor.py with $1 configuration on $2"
    exec python3 processor.py "$2"
else
    exit 1
fi
