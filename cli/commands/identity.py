"""`saas-cli identity`: create, list, show, update and remove keystores; `credentials` lives in its own module."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from saas_cli import original_keystores
from saas_cli.commands import credentials
from saas_cli.context import Context

if TYPE_CHECKING:
    from saas.core.identity import Identity

__all__ = ["register"]


def _identity_document(identity: Identity, path: Any = None) -> dict[str, Any]:
    document = {
        "id": identity.id,
        "name": identity.name,
        "email": identity.email,
        "nonce": identity.nonce,
        "signing_key": identity.s_key_info,
        "encryption_key": identity.e_key_info,
        "record": identity.model_dump(),
    }
    if path is not None:
        document["keystore"] = str(path)
    return document


def _identity_lines(identity: Identity) -> str:
    return "\n".join(
        [
            f"- Identity: {identity.label()}",
            f"- Signing Key: {identity.s_key_info}",
            f"- Encryption Key: {identity.e_key_info}",
        ]
    )


def create(ctx: Context, args: argparse.Namespace) -> None:
    from saas.core.identity import validate_profile
    from saas.core.keystore import Keystore

    name = (
        args.name
        if args.name is not None
        else ctx.prompt.text(
            "Enter name:", name="name", flag="--name", validate=lambda v: bool(v.strip()) or "Enter a name"
        )
    )
    email = (
        args.email
        if args.email is not None
        else ctx.prompt.text(
            "Enter email:",
            name="email",
            flag="--email",
            validate=lambda v: "@" in v or "Enter an email address",
        )
    )
    validate_profile(name, email)  # fail before asking for a password
    password = ctx.password if ctx.password is not None else ctx.prompt.new_password()
    keystore = Keystore.create(ctx.keystore_dir, name, email, password)
    ctx.out.created(
        "Identity ID",
        keystore.iid,
        ["New keystore created!", _identity_lines(keystore.identity), f"- Keystore: {keystore.path}"],
        _identity_document(keystore.identity, keystore.path),
    )


def list_(ctx: Context, args: argparse.Namespace) -> None:
    from saas.core.keystore import list_keystores

    found = list_keystores(ctx.keystore_dir)
    originals = original_keystores.listed(ctx)
    skipped = sorted(
        {p.name for p in ctx.keystore_dir.glob("*.json")}
        - {p.name for p, _ in found}
        - {o.path.name for o in originals}
    )
    if skipped:
        ctx.out.warning(f"not valid keystores (modified or corrupted?): {', '.join(skipped)}")
    ctx.out.result([{"name": i.name, "email": i.email, "id": i.id, "keystore": str(p)} for p, i in found])
    if ctx.out.as_json:
        return
    ctx.out.line(f"Found {len(found)} keystores in '{ctx.keystore_dir}':")
    if found:
        ctx.out.table(["NAME", "EMAIL", "KEYSTORE/IDENTITY ID"], [[i.name, i.email, i.id] for _, i in found])


def show(ctx: Context, args: argparse.Namespace) -> None:
    path, identity = ctx.select_keystore()
    ctx.out.result(
        _identity_document(identity, path),
        "\n".join(
            [
                f"Identity ID: {identity.id}",
                _identity_lines(identity),
                f"- Nonce: {identity.nonce}",
                f"- Keystore: {path}",
            ]
        ),
    )


def update(ctx: Context, args: argparse.Namespace) -> None:
    path, identity = ctx.select_keystore()
    name, email = args.name, args.email
    if name is None and email is None:
        if not ctx.prompt.interactive:
            from saas.core.errors import MissingValueError

            raise MissingValueError("name or email", "--name and/or --email")
        name = ctx.prompt.text("Enter name:", name="name", flag="--name", default=identity.name)
        email = ctx.prompt.text("Enter email:", name="email", flag="--email", default=identity.email)
    keystore = ctx.open_keystore(path)
    updated = keystore.update_profile(name=name, email=email)
    ctx.out.result(
        _identity_document(updated, path),
        f"Identity updated (nonce {updated.nonce}).\n{_identity_lines(updated)}\n"
        "Publish it to the nodes you use so they learn the change.",
    )


def remove(ctx: Context, args: argparse.Namespace) -> None:
    path, identity = ctx.select_keystore()
    if not args.confirm and not ctx.prompt.confirm(
        f"Remove keystore {identity.label()}? Its private keys and credentials are lost for good.",
        name="confirmation",
        flag="--confirm",
    ):
        ctx.out.result({"removed": False, "id": identity.id}, "Nothing removed.")
        return
    path.unlink(missing_ok=True)
    path.with_name(f".{path.stem}.lock").unlink(missing_ok=True)
    ctx.out.result({"removed": True, "id": identity.id}, f"Keystore {identity.id} removed.")


def publish(ctx: Context, args: argparse.Namespace) -> None:
    from saas.nodedb.proxy import NodeDBProxy

    path, _ = ctx.select_keystore()
    keystore = ctx.open_keystore(path)  # only the owner publishes (and the record is verified)
    address = ctx.node_address(args.address)
    with NodeDBProxy(address) as proxy:
        published = proxy.update_identity(keystore.identity)
    ctx.out.result(
        {"published": True, "id": published.id, "address": f"{address[0]}:{address[1]}"},
        f"Identity {published.id} published to node at {address[0]}:{address[1]}.",
    )


def discover(ctx: Context, args: argparse.Namespace) -> None:
    from saas.nodedb.proxy import NodeDBProxy

    address = ctx.node_address(args.address)
    with NodeDBProxy(address) as proxy:
        identities = sorted(proxy.get_identities().values(), key=lambda i: (i.name.lower(), i.id))
    ctx.out.result([_identity_document(i) for i in identities])
    if ctx.out.as_json:
        return
    ctx.out.line(f"Found {len(identities)} identities at {address[0]}:{address[1]}:")
    if identities:
        ctx.out.table(["NAME", "EMAIL", "IDENTITY ID"], [[i.name, i.email, i.id] for i in identities])


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser(
        "identity",
        help="create and manage identities (keystores)",
        description="Create and manage identities (keystores) and their credentials.",
    )
    group.set_defaults(handler=None, _parser=group)
    sub = group.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("create", help="create a new identity and its keystore")
    p.add_argument("--name", help="name of the identity")
    p.add_argument("--email", help="email of the identity")
    p.set_defaults(handler=create)

    p = sub.add_parser("list", help="list the keystores in the keystore directory")
    p.set_defaults(handler=list_)

    p = sub.add_parser("show", help="show an identity (no password needed)")
    p.set_defaults(handler=show)

    p = sub.add_parser("update", help="change the name and/or email of an identity")
    p.add_argument("--name", help="new name")
    p.add_argument("--email", help="new email")
    p.set_defaults(handler=update)

    p = sub.add_parser("remove", help="delete a keystore")
    p.add_argument("--confirm", action="store_true", help="do not ask for confirmation")
    p.set_defaults(handler=remove)

    p = sub.add_parser("publish", help="publish an identity to a node")
    p.add_argument("--address", help="REST address of the node (default $SAAS_ADDRESS or 127.0.0.1:5001)")
    p.set_defaults(handler=publish)

    p = sub.add_parser("discover", help="list the identities a node knows")
    p.add_argument("--address", help="REST address of the node (default $SAAS_ADDRESS or 127.0.0.1:5001)")
    p.set_defaults(handler=discover)

    original_keystores.register(sub)
    credentials.register(sub)
