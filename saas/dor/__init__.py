"""Data Object Repository: signed, access-controlled, optionally encrypted data objects."""
