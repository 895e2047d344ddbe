"""a + b = c: reads {"v": number} from <wd>/a and <wd>/b, writes {"v": a + b} to <wd>/c."""

import json
import os
import sys


def trigger(kind, value):
    # the trigger line format of saas.sdk.adapter (adapters do not import saas: they run in their own environment)
    print(f"trigger:{kind}:{value}", flush=True)


def main(wd):
    with open(os.path.join(wd, "a")) as f:
        a = json.load(f)["v"]
    with open(os.path.join(wd, "b")) as f:
        b = json.load(f)["v"]
    trigger("progress", 50)
    with open(os.path.join(wd, "c"), "w") as f:
        json.dump({"v": a + b}, f)
    trigger("output", "c")
    trigger("message", f"info:{a} + {b} = {a + b}")
    trigger("progress", 100)


if __name__ == "__main__":
    main(sys.argv[1])
