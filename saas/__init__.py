"""saas-middleware: a peer-to-peer data (DOR) and processor (RTI) node."""

__version__ = "0.1.0"
