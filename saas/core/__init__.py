"""Identities, keys, keystores, signatures and the exception tree. Imports no server dependencies."""
