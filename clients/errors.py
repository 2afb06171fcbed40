"""Errors raised by the LARR client. Catch :class:`LarrError` for all of them."""

from __future__ import annotations

# gRPC status codes (as tritonclient spells them) that mean "try again later / elsewhere" rather than
# "this request is wrong".
UNAVAILABLE_STATUS = "StatusCode.UNAVAILABLE"
UNAVAILABLE_STATUSES = frozenset({UNAVAILABLE_STATUS, "StatusCode.DEADLINE_EXCEEDED"})
# The server's answer to a malformed request (the python models answer client mistakes with it).
INVALID_ARGUMENT_STATUS = "StatusCode.INVALID_ARGUMENT"


class LarrError(Exception):
    """Base class of every error the LARR client raises."""


class InvalidRequestError(LarrError, ValueError):
    """The request was rejected by the client before sending (wrong scene features, bad ids, ...)."""


class ServerError(LarrError):
    """The server answered with an error, or with something that breaks the contract.

    ``message`` is the server's own message (for an ensemble step, Triton prefixes it with
    ``"in ensemble 'larr', "``); ``status`` is the gRPC status as tritonclient reports it (e.g.
    ``"StatusCode.INTERNAL"``), or None when the client itself found the answer unusable.
    """

    def __init__(self, message: str, status: str | None = None) -> None:
        super().__init__(message if status is None else f"[{status}] {message}")
        self.message = message
        self.status = status


class RejectedRequestError(ServerError, ValueError):
    """The server refused the request as malformed (gRPC INVALID_ARGUMENT): fix it; retrying cannot help."""


class ServerUnavailableError(ServerError):
    """The server could not be reached or did not answer in time (gRPC UNAVAILABLE / DEADLINE_EXCEEDED)."""


def server_error(message: str, status: str | None) -> ServerError:
    """The :class:`ServerError` subclass that fits ``status``."""
    if status == INVALID_ARGUMENT_STATUS:
        return RejectedRequestError(message, status)
    cls = ServerUnavailableError if status in UNAVAILABLE_STATUSES else ServerError
    return cls(message, status)
