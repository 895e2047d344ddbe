"""The datastore is private to the node's user: folders 0700, files 0600 (DESIGN §12).

A node process runs with umask 077 (`run_node` sets it), so everything it creates is private from the start.
`tighten` brings a datastore written by an older version (0755/0644) to the same modes once, at start. It only
changes modes (never owners) and never follows symbolic links.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

__all__ = ["FILE_MODE", "FOLDER_MODE", "NODE_UMASK", "tighten"]

logger = logging.getLogger(__name__)

NODE_UMASK = 0o077
FOLDER_MODE = 0o700
FILE_MODE = 0o600

# What a node writes at the top of its datastore. A folder with other entries and none of these is not a
# datastore (e.g. `--datastore ~` by mistake): its modes are left alone rather than making a home folder's
# scripts non-executable.
NODE_ENTRIES = frozenset({"dor", "rti", "p2p", "nodedb.sqlite"})

# Subtrees tightened at their top only. The RTI's adapter folders (`rti/procs/<proc>`) and job working folders
# (`rti/jobs/<job>`) belong to the adapter sandbox, which gives them to an unprivileged uid with modes of its own;
# the two parents are made 0700 (reachable by the node's user only), what is below is not touched.
SANDBOX_SUBTREES = frozenset({os.path.join("rti", "procs"), os.path.join("rti", "jobs")})


def tighten(root: Path) -> int:
    """Make `root` 0700 and, below it, folders 0700 and regular files 0600; returns how many modes changed.

    Blocking (walks the whole datastore): call it from a worker thread. Symbolic links, sockets and other special
    files are skipped; an entry whose mode cannot be changed (not ours) is logged and skipped."""
    if not root.is_dir():
        return 0
    if not _looks_like_datastore(root):
        logger.warning("'%s' does not look like a node datastore: its modes are left as they are", root)
        return 0
    changed = 0
    for folder, folders, files, folder_fd in os.fwalk(root, follow_symlinks=False):
        relative = os.path.relpath(folder, root)
        changed += _make_private(folder_fd, None, folder)
        for name in [name for name in folders if os.path.normpath(os.path.join(relative, name)) in SANDBOX_SUBTREES]:
            folders.remove(name)  # not walked: see SANDBOX_SUBTREES
            changed += _make_private(folder_fd, name, os.path.join(folder, name))
        for name in files:
            changed += _make_private(folder_fd, name, os.path.join(folder, name))
    if changed:
        logger.info("datastore '%s': made %d entries private (folders 0700, files 0600)", root, changed)
    return changed


def _looks_like_datastore(root: Path) -> bool:
    """True if `root` is empty or holds at least one entry a node writes."""
    with os.scandir(root) as entries:
        names = {entry.name for entry in entries}
    return not names or bool(names & NODE_ENTRIES)


def _make_private(folder_fd: int, name: str | None, shown: str) -> int:
    """Give a folder FOLDER_MODE or a regular file FILE_MODE; `name` None is the folder of `folder_fd` itself.

    Returns 1 if the mode changed. The entry is checked with lstat, so a symbolic link is never followed; only the
    node's own user can write the walked folders, so nothing can swap the entry for a link in between."""
    try:
        info = os.fstat(folder_fd) if name is None else os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            mode = FOLDER_MODE
        elif stat.S_ISREG(info.st_mode):
            mode = FILE_MODE
        else:  # symbolic link, socket, FIFO, device
            return 0
        if stat.S_IMODE(info.st_mode) == mode:
            return 0
        if name is None:
            os.fchmod(folder_fd, mode)
        else:
            os.chmod(name, mode, dir_fd=folder_fd)
    except OSError as e:
        logger.warning("cannot make '%s' private: %s", shown, e.strerror or e)
        return 0
    return 1
