"""Real X clients pointed at the fake stream, unmodified: tweepy 4.17's ``StreamingClient``
(and its ``Client``, for recent search) and X's own Python SDK, ``xdk``.

Both are dev dependencies, imported inside the functions (this package imports without
them). Nothing of either client is patched: only where its requests go changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from streamstall_probe import redirect_x_api

if TYPE_CHECKING:
    import tweepy
    import xdk

__all__ = ["redirect_tweepy", "tweepy_client", "tweepy_streaming_client", "xdk_client"]

StreamT = TypeVar("StreamT", bound="tweepy.StreamingClient")


def redirect_tweepy(client: StreamT, base_url: str) -> StreamT:
    """Send a tweepy client's requests (stream and rules) to the fake at ``base_url``,
    e.g. ``http://127.0.0.1:41234``; returns the client. Works on subclasses. The same
    adapter a user's DAG mounts (``streamstall_probe.redirect_x_api``)."""
    redirect_x_api(client.session, base_url)
    return client


def tweepy_streaming_client(base_url: str, token: str, **kwargs: Any) -> tweepy.StreamingClient:
    """A ``tweepy.StreamingClient(token, **kwargs)`` whose requests go to ``base_url``."""
    import tweepy

    return redirect_tweepy(tweepy.StreamingClient(token, **kwargs), base_url)


def tweepy_client(base_url: str, token: str, **kwargs: Any) -> tweepy.Client:
    """A ``tweepy.Client(token, **kwargs)`` (X's REST endpoints: recent search, with
    ``tweepy.Paginator``) whose requests go to ``base_url``."""
    import tweepy

    client = tweepy.Client(token, **kwargs)
    redirect_x_api(client.session, base_url)
    return client


def xdk_client(base_url: str, token: str) -> xdk.Client:
    """An ``xdk.Client`` (app-only bearer token) talking to the fake at ``base_url``.

    xdk takes the host as ``base_url``; its filtered stream is
    ``client.stream.posts(...)``, a generator of ``StreamPostsResponse`` models that
    reconnects by itself (``xdk.StreamConfig``: retries, back-off, ``timeout``, which is
    None, no read timeout, unless given)."""
    import xdk

    return xdk.Client(base_url=base_url.rstrip("/"), bearer_token=token)
