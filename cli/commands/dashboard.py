"""`saas-cli dashboard`: sign in to a node's dashboard in the browser without putting a keystore there.

Makes a single-use login token signed by the user's keystore (`saas.core.login`), valid for `--lifetime` seconds
and for the one node at `--address`, and prints the dashboard's URL with the token in its fragment (`/#login=...`:
browsers do not send fragments to servers, so it stays out of logs and proxies). `--open` also opens it in the
default browser. The page exchanges the token for a session cookie; a used or expired token is refused."""

from __future__ import annotations

import argparse

from saas_cli.context import Context

__all__ = ["register"]


def _lifetime(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError("the lifetime must be more than 0 and at most 600 seconds")
    return value


def dashboard(ctx: Context, args: argparse.Namespace) -> None:
    from saas.core.login import LoginToken
    from saas.nodedb.proxy import NodeDBProxy
    from saas_cli.commands.dor import ensure_published

    keystore = ctx.load_keystore()
    ensure_published(ctx, args, keystore)
    host, port = ctx.node_address(args.address)
    with NodeDBProxy((host, port)) as nodedb:
        node_iid = nodedb.get_node().identity.id
    token = LoginToken.create(keystore, node_iid, args.lifetime)
    url = f"http://{host}:{port}/#login={token.to_string()}"
    ctx.out.result(
        {"url": url, "iid": keystore.iid, "node_iid": node_iid, "expires": token.expires},
        f"Open this address within {args.lifetime:g} seconds to sign in as {keystore.iid} (it works once):\n{url}",
    )
    if args.open:
        import webbrowser

        if not webbrowser.open(url):
            ctx.out.warning("No browser could be opened: copy the address above into one")


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("dashboard", help="sign in to a node's dashboard in the browser (prints a login URL)")
    p.add_argument("--address", help="REST address of the node (default $SAAS_ADDRESS or 127.0.0.1:5001)")
    p.add_argument(
        "--lifetime", type=_lifetime, default=120.0, help="seconds the login URL stays valid (default 120, max 600)"
    )
    p.add_argument("--open", action="store_true", help="also open the URL in the default browser")
    p.add_argument("--publish-identity", action="store_true", help="publish your identity if the node lacks it")
    p.set_defaults(handler=dashboard)
