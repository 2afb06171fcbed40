"""Errors the serving modules answer one request with (importable without Triton).

Whose fault it is decides the status the client sees: a malformed request is ``INVALID_ARGUMENT``
("don't retry this"), a failing embedder is ``INTERNAL`` ("the server broke; retry elsewhere"), so a client
or a load balancer can tell them apart.
"""


class RequestError(ValueError):
    """An error that goes back to one request's client while the other requests are served.

    By default the request itself is wrong (``client_fault``): the answer is ``INVALID_ARGUMENT``.
    """

    client_fault: bool = True


class EmbedderError(RequestError):
    """The embedder failed for a batch; every request that needed it is answered ``INTERNAL``."""

    client_fault = False


def error_response(pb_utils, error: RequestError):
    """The python backend's error response for ``error``, with the gRPC status its fault calls for."""
    code = pb_utils.TritonError.INVALID_ARG if error.client_fault else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error), code))
