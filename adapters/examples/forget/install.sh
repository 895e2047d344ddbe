#!/bin/bash
# The seed's install script: one branch per configuration (nothing to install for a + b).
if [ "$1" == "default" ]; then
    echo "Run default configuration"
    exit 0
elif [ "$1" == "nscc" ]; then
    echo "Run nscc configuration"
    exit 0
else
    exit 1
fi
