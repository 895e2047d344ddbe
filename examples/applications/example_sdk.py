"""SDK example: the a + b = c processor, end to end, with the high-level SDK (`saas.sdk.base.connect`).

Start a node first (`scripts/run-node`), then run, from the repository root:

    .venv/bin/python examples/applications/example_sdk.py

The defaults match `scripts/run-node`: node 127.0.0.1:5001, keystores in ~/.keystore, the development identity
(its ID and password are the files dev-node.id and dev-node.password there). Override them with --address,
--keystore, --keystore-id and --password, or $SAAS_ADDRESS, $SAAS_KEYSTORE, $SAAS_KEYSTORE_ID and $SAAS_PASSWORD.
Deploying needs the node owner's identity (nodes deploy strictly by default). The adapter comes from a git
repository: --repo/--commit, or by default a new local repository made from adapters/examples/abc.
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from saas.core.keystore import Keystore
from saas.sdk.base import connect

HERE = Path(__file__).resolve().parent
ABC = HERE.parents[1] / "adapters" / "examples" / "abc"


def arguments() -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=env("SAAS_ADDRESS") or "127.0.0.1:5001")
    parser.add_argument("--keystore", default=env("SAAS_KEYSTORE") or "~/.keystore", help="keystore folder")
    parser.add_argument("--keystore-id", default=env("SAAS_KEYSTORE_ID"), help="identity ID (default: dev-node.id)")
    parser.add_argument("--password", default=env("SAAS_PASSWORD"), help="default: dev-node.password")
    parser.add_argument("--repo", help="adapter repository (URL or path); default: a local copy of abc")
    parser.add_argument("--commit", help="commit of --repo (default: HEAD)")
    parser.add_argument("--proc-path", default="abc", help="adapter folder in --repo")
    return parser.parse_args()


def load_keystore(args: argparse.Namespace) -> Keystore:
    folder = Path(args.keystore).expanduser()
    iid = args.keystore_id or (folder / "dev-node.id").read_text().strip()
    password = args.password or (folder / "dev-node.password").read_text()
    return Keystore.load(folder / f"{iid}.json", password)


def adapter_repository(work: Path) -> tuple[str, str]:
    """A git repository holding the abc adapter (what you would push to GitHub); returns (path, commit)."""
    repo = work / "adapters"
    shutil.copytree(ABC, repo / "abc")
    git = ["git", "-C", str(repo), "-c", "user.name=example", "-c", "user.email=example@localhost"]
    for command in (["init", "--quiet"], ["add", "--all"], ["commit", "--quiet", "-m", "abc adapter"]):
        subprocess.run([*git, *command], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    return str(repo), commit


def head_commit(repo: str) -> str:
    """The commit HEAD of a repository points to (a GPP pins a commit ID, not a branch)."""
    listing = subprocess.run(["git", "ls-remote", repo, "HEAD"], check=True, capture_output=True, text=True).stdout
    return listing.split()[0]


def main() -> None:
    args = arguments()
    work = Path(tempfile.mkdtemp(prefix="saas-example-"))

    # (1) Connect: publishes our identity to the network and learns its nodes.
    keystore = load_keystore(args)
    context = connect(args.address, keystore)
    print(f"connected as {keystore.identity.name} ({keystore.iid})")

    # (2) Add a Git-Processor-Pointer (where the adapter's code is) and deploy it on an RTI node.
    repo, commit = (args.repo, args.commit or head_commit(args.repo)) if args.repo else adapter_repository(work)
    gpp = context.upload_gpp(repo, commit, args.proc_path, "default")
    proc = gpp.deploy(context.rti())  # waits until the processor is ready
    print(f"processor {proc.descriptor.proc_id} ({proc.name}) is {proc.status().state}")

    # (3) Inputs: 'a' uploaded as a data object (by reference), 'b' given by value.
    a_path = work / "a.json"
    a_path.write_text(json.dumps({"v": 16}))
    obj_a = context.upload_content(a_path, "JSONObject", "json", access_restricted=False)
    print(f"uploaded a: {obj_a.meta.obj_id}")

    # (4) Run the job and wait: returns the outputs by name, or raises JobError with the reason if the job fails.
    output = proc.submit_and_wait(
        {"a": obj_a, "b": {"v": 2}},
        callback_progress=lambda percent: print(f"  progress {percent}%"),
        callback_message=lambda severity, text: print(f"  [{severity}] {text}"),
    )
    obj_c = output["c"]
    c = json.loads(obj_c.download(work / "c.json").read_text())
    print(f"result c = {c}")  # {'v': 18}

    # (5) The job's logs, and where c came from.
    job = context.find_job(obj_c.meta.recipe.job_id)
    print(f"logs: {job.logs(work / 'logs.tar.gz')}")
    print(f"provenance: {len(obj_c.get_provenance().steps)} step(s)")

    # (6) Tag the result and find it again by tag (every DOR of the network is searched).
    obj_c.update_tags({"description": "my first output", "contact": {"name": "Foo Bar"}})
    found = context.find_data_objects(["my first output"])
    print(f"found by tag: {[obj.meta.obj_id for obj in found]}")
    assert obj_c.meta.obj_id in [obj.meta.obj_id for obj in found]

    # (7) Clean up: undeploy the processor, delete the objects.
    proc.undeploy()
    for obj in (obj_a, obj_c, gpp):
        obj.delete()
    print("done")


if __name__ == "__main__":
    main()
