"""Import path kept for code written for the original middleware: `UnsuccessfulRequestError` is our
`RemoteError` (a node answered with an error; `reason`, `details`, `id` and `status`). New code imports from
`saas.core.errors`."""

from saas.core.errors import RemoteError

__all__ = ["UnsuccessfulRequestError"]

UnsuccessfulRequestError = RemoteError
