"""The one error type services raise for a failure the user should read, not a traceback."""


class ServiceError(RuntimeError):
    """A service could not do its job; the CLI prints the message and exits non-zero."""
