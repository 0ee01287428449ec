"""The python-tuf and securesystemslib names this package uses, imported in one place.

Both packages re-export these names from private modules without a static ``__all__``, which
mypy's strict mode does not treat as public; the one ignore per import lives here.
"""

from securesystemslib.signer import CryptoSigner, Signer  # type: ignore[attr-defined]
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

__all__ = [
    "CryptoSigner",
    "MetaFile",
    "Metadata",
    "Root",
    "Signer",
    "Snapshot",
    "TargetFile",
    "Targets",
    "Timestamp",
]
