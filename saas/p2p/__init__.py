"""P2P: the libp2p host in its own trio thread (`bridge`, `host`), the node's protocols, and the network service
that joins, syncs and watches the network. Importing this package does not import libp2p; `host` does."""
