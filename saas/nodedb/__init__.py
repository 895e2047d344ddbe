"""NodeDB: what a node knows about the network (signed node records and identity records)."""
