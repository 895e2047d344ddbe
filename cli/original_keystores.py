"""Keystores of the original middleware in the CLI: `identity import <file>`, and every command that picks a
keystore from the keystore folder converts an original one when it is named or picked (once; the original file is
left as it was and the converted keystore records the old ID)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from saas.core.identity import Identity
    from saas.core.keystore import Keystore
    from saas.core.original_keystore import OriginalKeystore, OriginalKeystoreInfo
    from saas_cli.context import Context

__all__ = ["import_", "listed", "register", "select"]


def _convert(ctx: Context, path: Path) -> tuple[OriginalKeystore, Keystore]:
    from saas.core.original_keystore import import_original_keystore

    original, keystore = import_original_keystore(path, ctx.ask_password(), ctx.keystore_dir)
    ctx.out.warning(
        f"converted the original keystore {original.info.iid} to {keystore.iid} "
        f"(new identity ID, same keys; '{path.name}' is left as it was)"
    )
    for skipped in original.skipped:
        ctx.out.warning(f"not converted: {skipped}")
    return original, keystore


def select(ctx: Context) -> tuple[Path, Identity] | None:
    """A keystore of the original middleware named by --keystore-id (its old ID) or picked from the folder,
    converted; None when the choice involves no original keystore (the caller selects as usual)."""
    from saas.core.keystore import list_keystores
    from saas.core.original_keystore import find_converted, find_original_keystores

    if ctx.keystore_id:
        if any(identity.id == ctx.keystore_id for _, identity in list_keystores(ctx.keystore_dir)):
            return None
        converted = find_converted(ctx.keystore_dir, ctx.keystore_id)
        if converted is not None:
            ctx.out.warning(f"keystore {ctx.keystore_id} was converted; its new ID is {converted.stem}")
            return next((p, i) for p, i in list_keystores(ctx.keystore_dir) if p == converted)
        for info in find_original_keystores(ctx.keystore_dir):
            if info.iid == ctx.keystore_id:
                _, keystore = _convert(ctx, info.path)
                return keystore.path, keystore.identity
        return None
    originals = find_original_keystores(ctx.keystore_dir)
    if not originals:
        return None
    found = list_keystores(ctx.keystore_dir)
    choices: list[tuple[str, tuple[Path, Identity | None]]] = [(i.label(), (p, i)) for p, i in found]
    choices += [
        (f"{o.name} <{o.email}> {o.iid} (original format: converted when picked)", (o.path, None)) for o in originals
    ]
    path, identity = (
        choices[0][1]
        if len(choices) == 1
        else ctx.prompt.select("Select the keystore:", choices, name="keystore", flag="--keystore-id")
    )
    if identity is not None:
        return path, identity
    _, keystore = _convert(ctx, path)
    return keystore.path, keystore.identity


def listed(ctx: Context) -> list[OriginalKeystoreInfo]:
    """For `identity list`: the original keystores not converted yet, told on stderr."""
    from saas.core.original_keystore import find_original_keystores

    originals = find_original_keystores(ctx.keystore_dir)
    for o in originals:
        ctx.out.warning(
            f"original-format keystore {o.iid} ({o.name} <{o.email}>): converted when first used, "
            f"or now with 'saas-cli identity import {o.path}'"
        )
    return originals


def import_(ctx: Context, args: argparse.Namespace) -> None:
    """`identity import <file>`: convert an original keystore into the keystore folder."""
    _, keystore = _convert(ctx, Path(args.file).expanduser())
    original_id = keystore.imported_from
    ctx.out.result(
        {"old_id": original_id, "id": keystore.iid, "name": keystore.identity.name, "keystore": str(keystore.path)},
        f"Old ID: {original_id}\nNew ID: {keystore.iid}\n"
        f"Imported {keystore.identity.label()} into '{keystore.path}' (same password).",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="convert a keystore of the original middleware",
        description="Convert a keystore file written by the original SaaS Middleware into the keystore folder. "
        "Keys, profile, content keys and credentials are kept; the identity ID changes (it is derived from the "
        "key) and both IDs are printed. The original file is not changed.",
    )
    p.add_argument("file", help="the original keystore file (<old-id>.json)")
    p.set_defaults(handler=import_)
