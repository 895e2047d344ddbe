#!/bin/bash
# A hostile install script (tests only): attacks the node while it is being installed; fails if any attack worked.
exec python3 ../hostile/attack.py install
