#!/bin/bash
# A hostile processor (tests only): $1 configuration, $2 working folder.
exec python3 attack.py "$2"
