"""Import path kept for code written for the original middleware: `SaaSRuntimeException` is our `SaaSError`
(every error raised on purpose; same `reason`, `details` and `id`). New code imports from `saas.core.errors`."""

from saas.core.errors import SaaSError

__all__ = ["SaaSRuntimeException"]

SaaSRuntimeException = SaaSError
