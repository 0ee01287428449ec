"""The exceptions edgeota raises, as one small tree.

    EdgeotaError                 root of everything below
    ├── UntrustedError           the remote or the artifact is bad: never retry the same bytes
    │   ├── VerificationError    hash or length mismatch, bad signature, expired metadata
    │   ├── PolicyError          validly signed, but not for us (component, device class, version)
    │   └── FormatError          a manifest, patch, journal or metadata file that does not parse
    ├── TransportError           the network failed: retry later, with back-off
    │   └── HTTPStatusError      the server answered with an unexpected status
    ├── InsufficientSpaceError   not enough disk for the work asked for
    └── HealthCheckError         a new version failed its health check on the device

Caller bugs raise ``ValueError``/``RuntimeError``. Foreign exceptions are wrapped at the
boundary with ``raise X(...) from e``. Every message says what failed, in which context, and
what to do next.
"""

from __future__ import annotations


class EdgeotaError(Exception):
    """Root of all edgeota errors."""


class UntrustedError(EdgeotaError):
    """The remote side or an artifact is not trustworthy."""


class VerificationError(UntrustedError):
    """Bytes or metadata failed verification (hash, length, signature, expiry)."""


class PolicyError(UntrustedError):
    """Authentic data that must not be used here (wrong component, class or version)."""


class FormatError(UntrustedError):
    """Data that does not parse as the format it claims to be."""


class TransportError(EdgeotaError):
    """The network or the remote server failed; the operation can be retried later."""


class HTTPStatusError(TransportError):
    """The server answered with a status the caller did not expect."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class InsufficientSpaceError(EdgeotaError):
    """There is not enough free disk space for the requested work."""


class HealthCheckError(EdgeotaError):
    """A newly installed version failed its health check."""
