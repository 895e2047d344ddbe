"""saas-middleware: a peer-to-peer data (DOR) and processor (RTI) node."""

from saas import _compat as _compat  # Python 3.10: what 3.11 added (and the one TimeoutError), before anything else

__version__ = "0.1.0"
