"""Faults the fake stream can inject, one module per family, registered by type name.

``network`` holds Toxiproxy's toxics (latency, bandwidth, slicer, limit_data, timeout,
reset_peer, slow_close, down); ``api`` holds X's own failures (http_error, disconnect,
malformed, duplicate, reorder). To add a fault, see docs/creating-faults.md.
"""

from fake_stream.faults import api, network
from fake_stream.faults.base import (
    Batch,
    ByteFault,
    ConnectFault,
    EndConnection,
    Fault,
    FaultContext,
    FaultError,
    FaultSpec,
    ListenerFault,
    MessageFault,
    Schedule,
    build,
    get,
    registered,
)

__all__ = [
    "Batch",
    "ByteFault",
    "ConnectFault",
    "EndConnection",
    "Fault",
    "FaultContext",
    "FaultError",
    "FaultSpec",
    "ListenerFault",
    "MessageFault",
    "Schedule",
    "api",
    "build",
    "get",
    "network",
    "registered",
]
