"""Trust layer on python-tuf: the signing repository (server) and the verifying client (device).

- ``keys``: ed25519 keys on disk, root key kept apart from the online keys
- ``state``: pure computation of the next signed metadata
- ``repository``: ``TufRepository``, the metadata folder the server publishes and serves
- ``client``: ``TrustClient``, the device's verified view of the metadata
- ``verify``: length and hash checks of downloaded target bytes
- ``testing``: an in-memory repository server for tests and the fleet simulator
"""

from edgeota.trust.client import HttpxFetcher, TrustClient
from edgeota.trust.repository import TufRepository, check_metadata_name, init_repository
from edgeota.trust.state import ExpiryPolicy, NewTarget
from edgeota.trust.verify import TargetVerifier, verify_file

__all__ = [
    "ExpiryPolicy",
    "HttpxFetcher",
    "NewTarget",
    "TargetVerifier",
    "TrustClient",
    "TufRepository",
    "check_metadata_name",
    "init_repository",
    "verify_file",
]
