"""API example: the a + b = c processor, end to end, with the proxies of the REST API (NodeDB, DOR, RTI).

Start a node first (`scripts/run-node`), then run, from the repository root:

    .venv/bin/python examples/applications/example_api.py

The defaults match `scripts/run-node`: node 127.0.0.1:5001, keystores in ~/.keystore, the development identity
(its ID and password are the files dev-node.id and dev-node.password there). Override them with --address,
--keystore, --keystore-id and --password, or $SAAS_ADDRESS, $SAAS_KEYSTORE, $SAAS_KEYSTORE_ID and $SAAS_PASSWORD.
Deploying needs the node owner's identity (nodes deploy strictly by default). The adapter comes from a git
repository: --repo/--commit, or by default a new local repository made from adapters/examples/abc.
The high-level SDK does the same in fewer lines: see example_sdk.py.
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy, search_network
from saas.dor.schemas import DataObject
from saas.nodedb.proxy import NodeDBProxy
from saas.rti.proxy import RTIProxy
from saas.rti.schemas import Task

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

    # (1) Identity: load the keystore and publish its identity (the public part) to the node.
    keystore = load_keystore(args)
    NodeDBProxy(args.address).update_identity(keystore.identity)
    print(f"identity {keystore.identity.name} ({keystore.iid}) published")

    # Proxies sign requests with the keystore.
    dor = DORProxy(args.address, keystore)
    rti = RTIProxy(args.address, keystore)

    # (2) A Git-Processor-Pointer says where the adapter's code is; its object ID is the processor ID.
    repo, commit = (args.repo, args.commit or head_commit(args.repo)) if args.repo else adapter_repository(work)
    gpp = dor.add_gpp_data_object(repo, commit, args.proc_path, "default", keystore.identity)
    proc_id = gpp.obj_id

    # (3) Deploy it (returns at once) and wait until it is ready.
    rti.deploy(proc_id, keystore)
    processor = rti.wait_deployed(proc_id, timeout=300, authority=keystore)  # signed: the owner sees a failure's log
    assert processor.state == "ready", f"deployment failed: {processor.error}\n{processor.log_tail}"
    print(f"processor {proc_id} is {processor.state}")

    # (4) Input 'a' as a data object (by reference), 'b' by value; output 'c' owned by us.
    a_path = work / "a.json"
    a_path.write_text(json.dumps({"v": 16}))
    obj_a = dor.add_data_object(a_path, keystore.identity, False, False, "JSONObject", "json")
    job = rti.submit_job(
        proc_id,
        [Task.InputReference(name="a", obj_id=obj_a.obj_id), Task.InputValue(name="b", value={"v": 2})],
        [Task.Output(name="c", owner_iid=keystore.iid, restricted_access=False, content_encrypted=False)],
        keystore,
    )
    print(f"job {job.id} submitted")

    # (5) Wait: the node answers as soon as the job changes (long-poll), so the end is noticed at once.
    status = rti.wait_for_job(job.id, keystore, timeout=300)
    assert status.state == "successful", f"job {status.state}: {status.errors}"

    # (6) Download the result and the job's logs.
    obj_c = status.output["c"]
    c = json.loads(dor.get_content(obj_c.obj_id, keystore, work / "c.json").read_text())
    print(f"result c = {c}")  # {'v': 18}
    print(f"logs: {rti.get_job_logs(job.id, keystore, work / 'logs.tar.gz')}")

    # (7) Tag the result, then search for it by tag on every DOR of the network.
    dor.update_tags(obj_c.obj_id, keystore, [DataObject.Tag(key="description", value="my first output")])
    found = search_network(args.address, keystore, patterns=["my first output"])
    print(f"found by tag: {[obj.obj_id for obj in found]}")
    assert obj_c.obj_id in [obj.obj_id for obj in found]

    # (8) Clean up: undeploy the processor, delete the objects.
    rti.undeploy(proc_id, keystore)
    for obj_id in (obj_a.obj_id, obj_c.obj_id, proc_id):
        dor.delete_data_object(obj_id, keystore)
    print("done")


if __name__ == "__main__":
    main()
