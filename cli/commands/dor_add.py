"""`saas-cli dor add` and `dor add-gpp`: upload data objects and add Git-Processor-Pointers.

What a person reads first is the new object's ID on one short line (`Object ID: ...`), then a summary; the full
record with -v (the seed's `Data object added: {...}`) or --json. `add` tags the object `name=<file name>` as the
original CLI did; several files are archived as tar.gz."""

from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from saas.core.errors import InvalidInputError
from saas_cli.commands.dor import ARCHIVE_FORMAT, _meta_document, _proxy, ensure_published
from saas_cli.context import Context, skip_unused_imports
from saas_cli.output import Progress

if TYPE_CHECKING:
    from saas.core.identity import Identity
    from saas.core.signing import Signer
    from saas.dor.proxy import DORProxy
    from saas.dor.schemas import CDataObject, DataObject
    from saas.dor.upload import BodyHash

__all__ = ["add", "add_gpp"]

NAME_TAG_LENGTH = 256


def _archive(ctx: Context, files: list[Path]) -> Path:
    fd_dir = Path(tempfile.mkdtemp(prefix="saas-add-", dir=ctx.temp_directory()))
    archive = fd_dir / "content.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in files:
            tar.add(path, arcname=path.name)
    return archive


def add(ctx: Context, args: argparse.Namespace) -> None:
    files = [Path(f).expanduser() for f in args.files]
    if not files:
        raise InvalidInputError("Give one or more files to add")
    for path in files:
        if not path.is_file():
            raise InvalidInputError(f"'{path}' is not a file")
    body_hash = _hash_early(ctx, args, files)
    # Opened while the SDK is imported, the node asked and the content hashed; signing the upload waits for it.
    keystore = ctx.unlock_keystore()
    skip_unused_imports()
    from saas.core.helpers import human_size
    from saas.dor.encryption import add_content

    data_type = args.data_type or ctx.prompt.text(
        "Enter data type:",
        name="data type",
        flag="--data-type",
        validate=lambda v: bool(v.strip()) or "Enter a data type",
    )
    if len(files) > 1:
        data_format = args.data_format or ARCHIVE_FORMAT
    else:
        data_format = args.data_format or ctx.prompt.text(
            "Enter data format:",
            name="data format",
            flag="--data-format",
            default=files[0].suffix.lstrip("."),
            validate=lambda v: bool(v.strip()) or "Enter a data format",
        )
    ensure_published(ctx, args, keystore)
    with _proxy(ctx, args, keystore) as proxy:
        creators: list[Identity] = [keystore.identity]
        if not args.assume_creator and ctx.prompt.interactive:
            from saas.nodedb.proxy import NodeDBProxy

            with NodeDBProxy(proxy.address) as nodedb:
                known = [i for i in nodedb.get_identities().values() if i.id != keystore.iid]
            if known:
                choices = [(keystore.identity.label(), keystore.identity)] + [(i.label(), i) for i in known]
                chosen = ctx.prompt.checkbox(
                    "Select all identities that are co-creators of this data object:",
                    choices,
                    name="creators",
                    flag="--assume-creator",
                )
                # The uploader is always a creator (the DOR refuses an upload whose signer is not one).
                creators += [i for i in chosen or [] if i.id != keystore.iid]
        content = files[0] if len(files) == 1 else _archive(ctx, files)
        try:
            obj = add_content(
                proxy,
                keystore,
                content,
                data_type,
                data_format,
                args.restrict_access,
                args.encrypt_content,
                creators=creators,
                progress=Progress("Uploading", not ctx.out.as_json),
                body_hash=body_hash,
            )
            size = content.stat().st_size
        finally:
            if content != files[0]:
                content.unlink(missing_ok=True)
                content.parent.rmdir()
        obj = _tag_with_name(proxy, keystore, obj, files)
    if args.encrypt_content:
        ctx.out.line(f"Content key for object {obj.obj_id} added to keystore.")
    access = "restricted" if obj.access_restricted else "open"
    encrypted = ", encrypted" if obj.content_encrypted else ""
    ctx.out.created(
        "Object ID",
        obj.obj_id,
        [f"Added {obj.data_type}/{obj.data_format}: {human_size(size)}, access {access}{encrypted}, {_tags_text(obj)}"],
        _meta_document(obj),
        "Data object added: " + json.dumps(_meta_document(obj), indent=4),
    )


def _hash_early(ctx: Context, args: argparse.Namespace, files: list[Path]) -> BodyHash | None:
    """The file's content hashed in a thread from now on, while the keystore is unlocked and the SDK imported (the
    node is idle meanwhile), when it is what will be sent: one file, not encrypted here. The streamed upload's
    commit names that hash (`DORProxy.add_data_object`)."""
    from saas.dor.upload import BodyHash

    if len(files) != 1 or args.encrypt_content:
        return None
    return BodyHash(b"", files[0])


def _tag_with_name(proxy: DORProxy, keystore: Signer, obj: CDataObject, files: list[Path]) -> CDataObject:
    """Tag a new object `name=<file name>` (several files: their names, comma-separated) as the original CLI did;
    an object that already has a name keeps it."""
    from saas.dor.schemas import CDataObject, DataObject

    if "name" in obj.tags:
        return obj
    name = ", ".join(f.name for f in files)
    name = name if len(name) <= NAME_TAG_LENGTH else name[: NAME_TAG_LENGTH - 1] + "…"
    tagged = proxy.update_tags(obj.obj_id, keystore, [DataObject.Tag(key="name", value=name)])
    assert isinstance(tagged, CDataObject)  # the node answers with the object's own kind
    return tagged


def _tags_text(obj: DataObject) -> str:
    if not obj.tags:
        return "no tags"
    return "tags " + ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in obj.tags.items())


def _analyse(ctx: Context, url: str, commit_id: str | None) -> tuple[Path, str]:
    """Clone the repository locally to offer commits, folders and configurations."""
    import git

    from saas.git import CloneError, clone

    work = Path(tempfile.mkdtemp(prefix="saas-gpp-", dir=ctx.temp_directory()))
    ctx.out.line(f"Cloning repository '{url}' to '{work}'...")
    try:
        clone(url, work / "repo", {"GIT_TERMINAL_PROMPT": "0"})
    except CloneError as e:
        raise InvalidInputError(f"Could not clone '{url}': {e.stderr.strip()[-200:]}") from None
    repo = git.Repo(work / "repo")
    commit = repo.commit(commit_id or "HEAD").hexsha
    repo.git.checkout("--quiet", commit)
    return work, commit


def add_gpp(ctx: Context, args: argparse.Namespace) -> None:
    import shutil

    from saas.dor.schemas import GPPDataObject

    keystore = ctx.load_keystore()
    p = ctx.prompt
    url = args.url or p.text(
        "Enter the URL (or path) of the repository:",
        name="url",
        flag="--url",
        validate=lambda v: bool(v.strip()) or "Enter a URL",
    )
    commit_id, proc_path, config = args.commit_id, args.path, args.config
    work = None
    try:
        if (
            None in (commit_id, proc_path, config)
            and p.interactive
            and p.confirm(
                f"Analyse repository at {url} to help with missing arguments?", name="analyse", flag=None, default=True
            )
        ):
            work, head = _analyse(ctx, url, commit_id)
            commit_id = commit_id or p.text("Enter commit id:", name="commit id", flag="--commit-id", default=head)
            if proc_path is None:
                folders = sorted(
                    str(d.parent.relative_to(work / "repo"))
                    for d in (work / "repo").rglob("descriptor.json")
                    if ".git" not in d.parts
                )
                if not folders:
                    raise InvalidInputError(f"No descriptor.json found in '{url}' at {commit_id}")
                proc_path = p.select(
                    "Select the processor path:", [(f, f) for f in folders], name="path", flag="--path"
                )
            if config is None:
                descriptor = json.loads((work / "repo" / proc_path / "descriptor.json").read_text())
                configs = [str(c) for c in descriptor.get("configurations", [])]
                config = p.select(
                    "Select the configuration profile:", [(c, c) for c in configs], name="config", flag="--config"
                )
        commit_id = commit_id or p.text("Enter commit id:", name="commit id", flag="--commit-id")
        proc_path = proc_path or p.text("Enter path to the processor folder:", name="path", flag="--path")
        config = config or p.text("Enter the configuration profile:", name="config", flag="--config")
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    credentials = keystore.github_credentials.get(url.rstrip("/"))
    ensure_published(ctx, args, keystore)
    with _proxy(ctx, args, keystore) as proxy:
        obj = proxy.add_gpp_data_object(
            url, commit_id, proc_path, config, keystore.identity, github_credentials=credentials
        )
    gpp = obj.gpp if isinstance(obj, GPPDataObject) else None
    what = f"{gpp.proc_descriptor.name} ({gpp.proc_config}:{gpp.commit_id[:7]})" if gpp else "a processor"
    ctx.out.created(
        "Object ID",
        obj.obj_id,
        [f"Added a GPP for {what}; deploy it with: saas-cli rti proc deploy {obj.obj_id}"],
        _meta_document(obj),
        "GPP Data object added: " + json.dumps(_meta_document(obj), indent=4),
    )
