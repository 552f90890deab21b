"""Real X clients pointed at the fake stream, unmodified: tweepy 4.17's ``StreamingClient``
and X's own Python SDK, ``xdk``.

Both are dev dependencies, imported inside the functions (this package imports without
them). Nothing of either client is patched: only where its requests go changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import requests
from requests.adapters import HTTPAdapter

if TYPE_CHECKING:
    import tweepy
    import xdk

__all__ = ["ToFakeServer", "redirect_tweepy", "tweepy_streaming_client", "xdk_client"]

#: tweepy's host, hard-coded in its ``StreamingClient`` and ``Client``.
TWEEPY_HOST = "https://api.twitter.com"

StreamT = TypeVar("StreamT", bound="tweepy.StreamingClient")


class ToFakeServer(HTTPAdapter):
    """A requests adapter that sends what is meant for ``https://api.twitter.com`` to
    ``base_url`` (path and query kept), directly: proxies chosen for api.twitter.com do
    not apply to the fake."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        url = request.url or ""
        if not url.startswith(TWEEPY_HOST + "/"):
            raise ValueError(f"{url!r} is not a request for {TWEEPY_HOST}")
        request.url = self.base_url + url[len(TWEEPY_HOST) :]
        kwargs["proxies"] = {}
        return super().send(request, **kwargs)


def redirect_tweepy(client: StreamT, base_url: str) -> StreamT:
    """Send a tweepy client's requests (stream and rules) to the fake at ``base_url``,
    e.g. ``http://127.0.0.1:41234``; returns the client. Works on subclasses."""
    client.session.mount(TWEEPY_HOST + "/", ToFakeServer(base_url))
    return client


def tweepy_streaming_client(base_url: str, token: str, **kwargs: Any) -> tweepy.StreamingClient:
    """A ``tweepy.StreamingClient(token, **kwargs)`` whose requests go to ``base_url``."""
    import tweepy

    return redirect_tweepy(tweepy.StreamingClient(token, **kwargs), base_url)


def xdk_client(base_url: str, token: str) -> xdk.Client:
    """An ``xdk.Client`` (app-only bearer token) talking to the fake at ``base_url``.

    xdk takes the host as ``base_url``; its filtered stream is
    ``client.stream.posts(...)``, a generator of ``StreamPostsResponse`` models that
    reconnects by itself (``xdk.StreamConfig``: retries, back-off, ``timeout``, which is
    None, no read timeout, unless given)."""
    import xdk

    return xdk.Client(base_url=base_url.rstrip("/"), bearer_token=token)
