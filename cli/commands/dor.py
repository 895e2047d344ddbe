"""`saas-cli dor`: find, download, tag, share and remove data objects on a node's DOR (`add` and `add-gpp` live
in `dor_add`).

Group flag `--address` (before the sub-command) picks the node; every value that is asked for has a flag.
Encrypted content is encrypted here before upload; its key goes into the keystore (and an envelope of it for the
owner onto the DOR), and `download` decrypts with the keystore's key or the caller's envelope."""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saas.core.errors import InvalidInputError, NotFoundError
from saas_cli.context import Context, skip_unused_imports, spread_group_option
from saas_cli.output import Progress
from saas_cli.unlock import Unlocking

if TYPE_CHECKING:
    from saas.core.keystore import Keystore
    from saas.dor.proxy import DORProxy
    from saas.dor.schemas import DataObject

__all__ = ["register"]

ARCHIVE_FORMAT = "archive(tar.gz)"


def _proxy(ctx: Context, args: argparse.Namespace, keystore: Keystore | Unlocking | None = None) -> DORProxy:
    from saas.dor.proxy import DORProxy

    return DORProxy(ctx.node_address(args.address), keystore=keystore)


def _address_text(ctx: Context, args: argparse.Namespace) -> str:
    host, port = ctx.node_address(args.address)
    return f"{host}:{port}"


def _meta_document(obj: DataObject) -> dict[str, Any]:
    return obj.model_dump(mode="json")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _label(obj: DataObject) -> str:
    tags = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in obj.tags.items()]
    return f"{obj.obj_id} [{obj.data_type}/{obj.data_format}] {tags}"


def ensure_published(ctx: Context, args: argparse.Namespace, keystore: Keystore | Unlocking) -> None:
    """Publish the identity if the node does not know it (asks first when interactive). A keystore still being
    opened is waited for before publishing: a wrong password changes nothing on the node."""
    from saas.nodedb.proxy import NodeDBProxy

    address = _address_text(ctx, args)
    with NodeDBProxy(ctx.node_address(args.address)) as nodedb:
        known = nodedb.get_identity(keystore.iid)
        if known is not None and known.nonce >= keystore.identity.nonce:
            return
        if ctx.prompt.interactive and not getattr(args, "publish_identity", False):
            state = "is not known to" if known is None else "has an older record on"
            if not ctx.prompt.confirm(
                f"Identity {keystore.iid} {state} the node at {address}. Publish identity?",
                name="publish",
                flag="--publish-identity",
                default=True,
            ):
                raise InvalidInputError(f"Identity {keystore.iid} must be published to the node at {address} first")
        if isinstance(keystore, Unlocking):
            keystore.keystore()
        nodedb.update_identity(keystore.identity)
    ctx.out.line(f"Identity {keystore.iid} published to node at {address}.")


def _own_objects(proxy: DORProxy, keystore: Keystore | Unlocking) -> list[DataObject]:
    return proxy.search(owner_iid=keystore.iid, limit=1000)


def _pick_objects(
    ctx: Context, given: list[str], proxy: DORProxy, keystore: Keystore | Unlocking, message: str, flag: str
) -> list[str]:
    if given:
        return given
    objects = _own_objects(proxy, keystore)
    if not objects:
        raise NotFoundError("You own no data objects on this node")
    return ctx.prompt.checkbox(message, [(_label(o), o.obj_id) for o in objects], name="data objects", flag=flag)


# -- commands -------------------------------------------------------------------------------------------------


def search(ctx: Context, args: argparse.Namespace) -> None:
    from saas.dor.proxy import search_network

    keystore = ctx.load_keystore() if args.own or ctx.keystore_id or ctx.password else None
    tags = {}
    for item in args.tag or []:
        key, sep, value = item.partition("=")
        tags[key] = _parse_value(value) if sep else None
    filters: dict[str, Any] = {
        "patterns": args.patterns or None,
        "owner_iid": keystore.iid if args.own and keystore else None,
        "data_type": args.data_type,
        "data_format": args.data_format,
        "tags": tags or None,
        "limit": args.limit,
    }
    if args.this_node_only:
        with _proxy(ctx, args, keystore) as proxy:
            found = proxy.search(**filters)
    else:
        from saas.nodedb.fanout import DEFAULT_DEADLINE

        deadline = args.deadline or DEFAULT_DEADLINE
        found = search_network(ctx.node_address(args.address), keystore, deadline=deadline, **filters)
        if found.unanswered:
            missing = "; ".join(str(u) for u in found.unanswered)
            ctx.out.warning(f"{len(found.unanswered)} node(s) did not answer, results are partial: {missing}")
    per_node = Counter(o.custodian.identity.id if o.custodian else "" for o in found)
    cut = sorted(iid[:16] + "…" if iid else "this node" for iid, n in per_node.items() if n >= args.limit)
    if cut:
        ctx.out.warning(f"At most {args.limit} results per node are shown, and {', '.join(cut)} had that many: "
                        "there may be more (--limit N, up to 1000)")  # fmt: skip
    ctx.out.result([_meta_document(o) for o in found])
    if ctx.out.as_json:
        return
    if args.this_node_only:
        ctx.out.line(f"Found {len(found)} data objects at {_address_text(ctx, args)}:")
    else:
        ctx.out.line(f"Found {len(found)} data objects in the network of {_address_text(ctx, args)}:")
    if found:
        ctx.out.table(
            ["OBJECT ID", "NODE", "TYPE", "FORMAT", "OWNER", "ACCESS", "TAGS"],
            [
                [
                    o.obj_id,
                    o.custodian.identity.id[:16] + "…" if o.custodian else "",
                    o.data_type,
                    o.data_format,
                    o.owner_iid[:16] + "…",
                    "restricted" if o.access_restricted else "open",
                    ", ".join(f"{k}={v}" for k, v in o.tags.items()),
                ]
                for o in found
            ],
        )


def meta(ctx: Context, args: argparse.Namespace) -> None:
    if args.obj_id and args.obj_id_option:
        raise InvalidInputError("Give the data object once: as OBJ_ID or --obj-id")
    given = args.obj_id or args.obj_id_option
    keystore = ctx.load_keystore() if ctx.keystore_id or ctx.password or not given else None
    with _proxy(ctx, args, keystore) as proxy:
        obj_id = given or _pick_objects(ctx, [], proxy, keystore, "Select data object:", "OBJ_ID")[0]  # type: ignore[arg-type]
        obj = proxy.get_meta(obj_id)
    if obj is None:
        raise NotFoundError(f"Data object {obj_id} not found at {_address_text(ctx, args)}")
    ctx.out.result(_meta_document(obj), json.dumps(_meta_document(obj), indent=4))


def _ids_and_destination(arguments: list[str], option: str | None) -> tuple[list[str], str]:
    """`download OBJ_IDS... --destination D`, or the original's `download OBJ_IDS... DESTINATION`: without the
    option, a last argument that is not an object ID (64 hex characters) is the destination folder."""
    if option is None and arguments and not re.fullmatch(r"[0-9a-f]{64}", arguments[-1]):
        return arguments[:-1], arguments[-1]
    return arguments, option or "."


def download(ctx: Context, args: argparse.Namespace) -> None:
    obj_ids, folder = _ids_and_destination(args.obj_ids, args.destination)
    keystore = ctx.unlock_keystore()  # opened while the SDK is imported and the node is asked
    skip_unused_imports()
    from saas.dor.encryption import download_content

    destination = Path(folder).expanduser()
    results = []
    with _proxy(ctx, args, keystore) as proxy:
        obj_ids = _pick_objects(ctx, obj_ids, proxy, keystore, "Select data objects to download:", "OBJ_IDS")
        for obj_id in obj_ids:
            obj = proxy.get_meta(obj_id)  # signed: the keystore is open from here on
            if obj is None:
                raise NotFoundError(f"Data object {obj_id} not found at {_address_text(ctx, args)}")
            # After the object is known: a mistyped ID (or a wrong password) makes no folder.
            destination.mkdir(parents=True, exist_ok=True)
            suffix = "tar.gz" if obj.data_format == ARCHIVE_FORMAT else obj.data_format
            target = destination / f"{obj_id}.{suffix}"
            download_content(
                proxy, keystore, obj, target, progress=Progress(f"Downloading {obj_id[:12]}", not ctx.out.as_json)
            )
            results.append({"obj_id": obj_id, "path": str(target)})
            ctx.out.line(f"Data object {obj_id} downloaded to '{target}'.")
    ctx.out.result(results)


def remove(ctx: Context, args: argparse.Namespace) -> None:
    from saas.dor.encryption import forget_content_key

    keystore = ctx.load_keystore()
    removed = []
    with _proxy(ctx, args, keystore) as proxy:
        obj_ids = _pick_objects(ctx, args.obj_ids, proxy, keystore, "Select data objects to remove:", "OBJ_IDS")
        for obj_id in obj_ids:
            proxy.delete_data_object(obj_id, keystore)
            forget_content_key(keystore, obj_id)
            removed.append(obj_id)
            ctx.out.line(f"Data object {obj_id} removed.")
    ctx.out.result({"removed": removed})


def usage(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.unlock_keystore()
    skip_unused_imports()
    from saas.core.helpers import human_size

    with _proxy(ctx, args, keystore) as proxy:
        found = proxy.usage()
    quota = "unlimited" if found.quota is None else human_size(found.quota)
    ctx.out.result(
        found.model_dump(mode="json"),
        f"Your data objects on the node at {_address_text(ctx, args)}: {human_size(found.bytes)} "
        f"({found.objects} object{'' if found.objects == 1 else 's'}); storage quota: {quota}",
    )


def _parse_tags(items: list[str]) -> list[Any]:
    from pydantic import ValidationError

    from saas.dor.schemas import DataObject

    tags = []
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise InvalidInputError(f"Invalid tag '{item}': use key=value")
        try:
            tags.append(DataObject.Tag(key=key, value=_parse_value(value) if sep else None))
        except ValidationError as e:  # the key's form, or the value's depth and size bounds
            problems = "; ".join(f"{p['loc'][0]}: {p['msg']}" for p in e.errors(include_input=False))
            raise InvalidInputError(f"Invalid tag '{key[:64]}': {problems}") from None
    return tags


def _ask_tags(ctx: Context) -> list[str]:
    """Tags typed one per prompt (as the original's interactive `dor tag`), each checked at once; empty ends."""

    def check(text: str) -> bool | str:
        if not text.strip():
            return True
        try:
            _parse_tags([text.strip()])
        except InvalidInputError as e:
            return e.reason
        return True

    items: list[str] = []
    while True:
        text = ctx.prompt.text(
            "Enter a tag (key=value; empty to finish):", name="tags", flag="KEY=VALUE", validate=check
        ).strip()
        if not text:
            return items
        items.append(text)


def tag(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    tags = _parse_tags(args.tags)
    if not tags and not ctx.prompt.interactive:
        raise InvalidInputError("Give one or more tags as key=value")
    with _proxy(ctx, args, keystore) as proxy:
        obj_id = args.obj_id or _pick_objects(ctx, [], proxy, keystore, "Select data object:", "--obj-id")[0]
        tags = tags or _parse_tags(_ask_tags(ctx))
        if not tags:
            raise InvalidInputError("No tags given")
        obj = proxy.update_tags(obj_id, keystore, tags)
    ctx.out.result(_meta_document(obj), f"Tags of {obj_id}: {json.dumps(obj.tags)}")


def untag(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    if not args.keys and not ctx.prompt.interactive:
        raise InvalidInputError("Give one or more tag keys to remove")
    with _proxy(ctx, args, keystore) as proxy:
        obj_id = args.obj_id or _pick_objects(ctx, [], proxy, keystore, "Select data object:", "--obj-id")[0]
        keys = list(args.keys)
        if not keys:  # the original's pick list of the object's tags
            obj = proxy.get_meta(obj_id)
            if obj is None:
                raise NotFoundError(f"Data object {obj_id} not found at {_address_text(ctx, args)}")
            if not obj.tags:
                raise NotFoundError(f"Data object {obj_id} has no tags")
            keys = ctx.prompt.checkbox(
                "Select the tags to remove:",
                [(f"{k}={v if isinstance(v, str) else json.dumps(v)}", k) for k, v in obj.tags.items()],
                name="tags",
                flag="KEY",
            )
            if not keys:
                raise InvalidInputError("No tags selected")
        obj = proxy.remove_tags(obj_id, keystore, keys)
    ctx.out.result(_meta_document(obj), f"Tags of {obj_id}: {json.dumps(obj.tags)}")


def access_show(ctx: Context, args: argparse.Namespace) -> None:
    from saas.nodedb.proxy import NodeDBProxy

    keystore = ctx.load_keystore()
    with _proxy(ctx, args, keystore) as proxy:
        obj_id = args.obj_id or _pick_objects(ctx, [], proxy, keystore, "Select data object:", "--obj-id")[0]
        obj = proxy.get_meta(obj_id)
        if obj is None:
            raise NotFoundError(f"Data object {obj_id} not found at {_address_text(ctx, args)}")
        with NodeDBProxy(proxy.address) as nodedb:
            identities = nodedb.get_identities()
    rows = [
        {
            "iid": i,
            "name": identities[i].name if i in identities else None,
            "email": identities[i].email if i in identities else None,
            "owner": i == obj.owner_iid,
        }
        for i in obj.access
    ]
    ctx.out.result({"obj_id": obj_id, "access_restricted": obj.access_restricted, "access": rows})
    if not ctx.out.as_json:
        ctx.out.line(f"Access to {obj_id} ({'restricted' if obj.access_restricted else 'open to everyone'}):")
        ctx.out.table(
            ["IDENTITY ID", "NAME", "EMAIL", "OWNER"],
            [[r["iid"], r["name"], r["email"], "yes" if r["owner"] else ""] for r in rows],
        )


def access_grant(ctx: Context, args: argparse.Namespace) -> None:
    from saas.nodedb.proxy import NodeDBProxy

    keystore = ctx.load_keystore()
    with _proxy(ctx, args, keystore) as proxy, NodeDBProxy(proxy.address) as nodedb:
        obj_ids = _pick_objects(ctx, args.obj_ids, proxy, keystore, "Select data objects:", "OBJ_IDS")
        if args.iid:
            grantee = nodedb.get_identity(args.iid)
            if grantee is None:
                raise NotFoundError(f"Identity {args.iid} is not known to the node at {_address_text(ctx, args)}")
        else:
            others = [i for i in nodedb.get_identities().values() if i.id != keystore.iid]
            if not others:
                raise NotFoundError("The node knows no other identities")
            grantee = ctx.prompt.select(
                "Select the identity who should be granted access:",
                [(i.label(), i) for i in others],
                name="identity",
                flag="--iid",
            )
        for obj_id in obj_ids:
            proxy.grant_access(obj_id, keystore, grantee)
            ctx.out.line(f"Granting access to data object {obj_id} for identity {grantee.id}...Done")
    ctx.out.result({"granted": obj_ids, "iid": grantee.id})


def access_revoke(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    with _proxy(ctx, args, keystore) as proxy:
        obj_id = args.obj_id or _pick_objects(ctx, [], proxy, keystore, "Select data object:", "--obj-id")[0]
        iids = list(args.iids)
        if not iids:
            obj = proxy.get_meta(obj_id)
            if obj is None:
                raise NotFoundError(f"Data object {obj_id} not found")
            others = [i for i in obj.access if i != obj.owner_iid]
            if not others:
                raise NotFoundError(f"No one but the owner has access to {obj_id}")
            iids = ctx.prompt.checkbox(
                "Select the identities whose access should be revoked:",
                [(i, i) for i in others],
                name="identities",
                flag="IIDS (positional)",
            )
        for iid in iids:
            proxy.revoke_access(obj_id, keystore, iid)
            ctx.out.line(f"Revoking access to data object {obj_id} for identity {iid}...Done")
    ctx.out.result({"obj_id": obj_id, "revoked": iids})


def register(commands: argparse._SubParsersAction) -> None:
    from saas_cli.commands.dor_add import add, add_gpp

    group = commands.add_parser("dor", help="data objects on a node's Data Object Repository")
    group.add_argument(
        "--address",
        help="REST address of the node (default $SAAS_ADDRESS or 127.0.0.1:5001; also after the sub-command)",
    )
    group.set_defaults(handler=None, _parser=group)
    sub = group.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("search", help="find data objects")
    p.add_argument("patterns", nargs="*", help="substrings of type, format or tags (any matches)")
    p.add_argument("--own", action="store_true", help="only objects you own")
    p.add_argument("--data-type", help="exact data type")
    p.add_argument("--data-format", help="exact data format")
    p.add_argument("--tag", action="append", help="key or key=value (repeatable)")
    p.add_argument("--limit", type=int, default=100, help="at most this many results (per node)")
    p.add_argument(
        "--this-node-only", action="store_true", help="search only this node's DOR (default: every DOR of the network)"
    )
    p.add_argument(
        "--deadline",
        type=float,
        help="seconds the network search may take; nodes that did not answer are named (default 3)",
    )
    p.set_defaults(handler=search)

    p = sub.add_parser("add", help="add a data object (several files are archived as tar.gz)")
    p.add_argument("files", nargs="*", metavar="FILE")
    p.add_argument("--restrict-access", action="store_true", help="only the owner and grantees may use it")
    p.add_argument("--encrypt-content", action="store_true", help="encrypt before upload (key kept in the keystore)")
    p.add_argument("--assume-creator", action="store_true", help="you are the only creator (do not ask)")
    p.add_argument("--publish-identity", action="store_true", help="publish your identity if the node lacks it")
    p.add_argument("--data-type", help="data type, e.g. JSONObject")
    p.add_argument("--data-format", help=f"data format, e.g. json (several files: {ARCHIVE_FORMAT})")
    p.set_defaults(handler=add)

    p = sub.add_parser("add-gpp", help="add a Git-Processor-Pointer (an adapter in a git repository)")
    p.add_argument("--url", help="repository URL or path")
    p.add_argument("--commit-id", help="commit to pin")
    p.add_argument("--path", help="folder of the adapter (with descriptor.json)")
    p.add_argument("--config", help="configuration profile")
    p.add_argument("--publish-identity", action="store_true", help="publish your identity if the node lacks it")
    p.set_defaults(handler=add_gpp)

    p = sub.add_parser("meta", help="show the metadata of a data object")
    p.add_argument("obj_id", nargs="?", metavar="OBJ_ID")
    p.add_argument("--obj-id", dest="obj_id_option", metavar="OBJ_ID", help="the data object (as in the original)")
    p.set_defaults(handler=meta)

    p = sub.add_parser(
        "download", help="download data objects (decrypting encrypted content): OBJ_IDS... [DESTINATION]"
    )
    p.add_argument("obj_ids", nargs="*", metavar="OBJ_IDS", help="object IDs, then optionally the destination folder")
    p.add_argument("--destination", help="folder to download into (default: current folder)")
    p.set_defaults(handler=download)

    p = sub.add_parser("remove", help="delete data objects you own")
    p.add_argument("obj_ids", nargs="*", metavar="OBJ_IDS")
    p.set_defaults(handler=remove)

    p = sub.add_parser("usage", help="how much storage your data objects take on the node, and your quota")
    p.set_defaults(handler=usage)

    p = sub.add_parser("tag", help="set tags (key=value; values are JSON when they parse; asked for if none)")
    p.add_argument("tags", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--obj-id", help="the data object")
    p.set_defaults(handler=tag)

    p = sub.add_parser("untag", help="remove tags by key (without KEY: pick from the object's tags)")
    p.add_argument("keys", nargs="*", metavar="KEY")
    p.add_argument("--obj-id", help="the data object")
    p.set_defaults(handler=untag)

    access = sub.add_parser("access", help="show, grant and revoke access")
    access.set_defaults(handler=None, _parser=access)
    access_sub = access.add_subparsers(title="commands", metavar="COMMAND")
    p = access_sub.add_parser("show", help="who may use a data object")
    p.add_argument("--obj-id", help="the data object")
    p.set_defaults(handler=access_show)
    p = access_sub.add_parser("grant", help="grant an identity access to data objects")
    p.add_argument("obj_ids", nargs="*", metavar="OBJ_IDS")
    p.add_argument("--iid", help="the identity to grant access to")
    p.set_defaults(handler=access_grant)
    p = access_sub.add_parser("revoke", help="revoke identities' access to a data object")
    p.add_argument("iids", nargs="*", metavar="IIDS")
    p.add_argument("--obj-id", help="the data object")
    p.set_defaults(handler=access_revoke)
    spread_group_option(group, "--address", "address")
