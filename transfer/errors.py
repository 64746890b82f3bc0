"""The one exception root of Handover, split by blame.

Every error raised on purpose by Handover derives from :class:`HandoverError`.
Its message is written for the person at the keyboard (a DSL or an operator):
what went wrong and what to do about it. The CLI prints it on one line and exits
non-zero; the HTTP layer turns it into an RFC 9457 problem document with
``http_status``. Never put secrets or safeguarding text in a message.
"""

from __future__ import annotations


class HandoverError(Exception):
    """Root of every error Handover raises on purpose."""

    #: HTTP status used when this error reaches the API edge.
    http_status: int = 500
    #: Short stable slug used in problem documents' ``type``.
    slug: str = "error"
    #: CLI exit code.
    exit_code: int = 1
    #: Title of the problem document.
    title: str = "Something went wrong"

    def __init__(self, message: str, *, detail: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: Small structured detail that is safe to show (no secrets, no concern text).
        self.detail: dict[str, object] = dict(detail or {})

    def diagnostics(self) -> str:
        """The text shown to the user."""
        return self.message


class InputError(HandoverError):
    """What we were given is wrong (bad file, bad value, bad request body)."""

    http_status = 400
    slug = "invalid-input"
    exit_code = 2
    title = "The input is not valid"


class ConfigError(InputError):
    """The node's configuration is wrong; the message names the setting."""

    slug = "invalid-configuration"
    exit_code = 3
    title = "The configuration is not valid"


class NotFoundError(HandoverError):
    """The thing asked for does not exist (or is not visible to the asker)."""

    http_status = 404
    slug = "not-found"
    exit_code = 4
    title = "Not found"


class ConflictError(HandoverError):
    """The request conflicts with the current state (e.g. already exists)."""

    http_status = 409
    slug = "conflict"
    exit_code = 5
    title = "Conflict with the current state"


class PolicyError(HandoverError):
    """A rule forbids it: permissions, consent, revoked key, retention."""

    http_status = 403
    slug = "forbidden"
    exit_code = 6
    title = "Not allowed"


class AuthenticationError(PolicyError):
    """Sign-in failed or the session/token is not valid."""

    http_status = 401
    slug = "unauthenticated"
    title = "Sign-in required or failed"


class IntegrityError(HandoverError):
    """Data failed a cryptographic or structural check: tampered, corrupt or truncated."""

    http_status = 422
    slug = "integrity-failure"
    exit_code = 7
    title = "The data failed an integrity check"


class DamagedStateError(IntegrityError):
    """The node's own stored state is damaged, missing or not its own (a database, a file).

    Not the caller's fault and not something a retry fixes: the operator restores the
    damaged part from a backup (``docs/operations.md``, "Backup and restore").
    """

    http_status = 503
    slug = "damaged-state"
    title = "The node's stored data is damaged"


class PeerError(IntegrityError):
    """A remote node or an outside party sent something wrong."""

    slug = "peer-error"
    title = "The other side sent something wrong"


class TransportError(HandoverError):
    """The network or the disk failed; trying again later may work."""

    http_status = 503
    slug = "transport-failure"
    exit_code = 8
    title = "A network or storage failure"


class OutOfSpaceError(TransportError):
    """The node's own disk (or its database's) is full: nothing was changed; try again later.

    Not the caller's fault: the operator frees space (``docs/operations.md``, "Disk
    space") and the node carries on by itself.
    """

    slug = "out-of-space"
    title = "The node is out of storage space"


class InsufficientStorageError(TransportError):
    """An upload offered to this node cannot fit in its free space (HTTP 507).

    The sender waits and offers it again; smaller packages that fit still go through.
    """

    http_status = 507
    slug = "insufficient-storage"
    title = "Not enough storage space for this upload just now"


class TooLargeError(InputError):
    """An upload or file is bigger than the configured limit."""

    http_status = 413
    slug = "too-large"
    title = "Too large"
