"""Moved to `saas.git` (one module for git); these names stay importable from here."""

from saas.git import GitSource, GitSourceRefusedError, UnsupportedSourceError, git_env, is_public, parse_source

__all__ = ["GitSource", "GitSourceRefusedError", "UnsupportedSourceError", "git_env", "is_public", "parse_source"]
