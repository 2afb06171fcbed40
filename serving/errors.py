"""Errors the serving modules raise (importable without Triton)."""


class RequestError(ValueError):
    """A request is malformed; the message goes back to that request's client, the rest are served."""
