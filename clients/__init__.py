"""Python client of the LARR serving ensemble (``larr.clients``): importable without torch.

    from larr.clients import LarrClient, ScoreRequest

    with LarrClient("127.0.0.1:8001") as client:
        ctr = client.score({"weather": "heavy rain", "time_slot": "late night"}, user_id=3, item_ids=[1, 2, 3])
"""

from larr.clients.client import (
    DEFAULT_TIMEOUT_S,
    DEFAULT_URL,
    AsyncLarrClient,
    EncodedRequest,
    LarrClient,
    SceneSchema,
    ScoreRequest,
    encode_request,
)
from larr.clients.errors import (
    InvalidRequestError,
    LarrError,
    RejectedRequestError,
    ServerError,
    ServerUnavailableError,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_URL",
    "AsyncLarrClient",
    "EncodedRequest",
    "InvalidRequestError",
    "LarrClient",
    "LarrError",
    "RejectedRequestError",
    "SceneSchema",
    "ScoreRequest",
    "ServerError",
    "ServerUnavailableError",
    "encode_request",
]
