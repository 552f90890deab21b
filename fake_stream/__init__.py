"""A fake X (Twitter) API v2 tweet stream with a controllable rate, faults, and a
ground-truth ledger of every tweet created, delivered and dropped."""

from fake_stream.config import ServerConfig
from fake_stream.ledger import LedgerError, LedgerReader
from fake_stream.rates import RateProfile, parse_profile
from fake_stream.server import FakeStreamServer

__all__ = [
    "FakeStreamServer",
    "LedgerError",
    "LedgerReader",
    "RateProfile",
    "ServerConfig",
    "parse_profile",
]
