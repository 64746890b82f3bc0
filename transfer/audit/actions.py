"""The audit log's actions in plain words, and the groups a person searches by (pure).

An entry names its action as code does (``store.chronology.read``); a DPO reads "Read
the pupil's chronology". :func:`action_words` says any action in words (the known ones
as written here, the rest from their parts); :data:`ACTION_GROUPS` are the choices of
the audit trail's "What was done" filter, each with the actions it finds (a trailing
``*`` matches every action that starts so).
"""

from __future__ import annotations

from typing import Final

#: Actions in words (what the person did, or what the node did).
ACTION_WORDS: Final[dict[str, str]] = {
    "store.pupil.read": "Opened the pupil's record",
    "store.pupil.find": "Looked the pupil up",
    "store.pupil.list": "Listed the pupils",
    "store.pupil.create": "Added the pupil",
    "store.pupil.update": "Changed the pupil's details",
    "store.chronology.read": "Read the pupil's chronology",
    "store.concern.read": "Read a concern",
    "store.concern.list": "Listed concerns",
    "store.concern.history": "Read a concern's earlier text",
    "store.concern.record": "Logged a concern",
    "store.concern.amend": "Changed a concern",
    "store.concern.status": "Changed a concern's state",
    "store.concern.form": "Opened the form to log a concern",
    "store.triage.record": "Recorded a triage decision",
    "store.action.add": "Added an action",
    "store.action.complete": "Marked an action as done",
    "store.action.list": "Listed actions",
    "store.action.owners": "Listed who can own an action",
    "store.contact.add": "Recorded a contact with an agency",
    "store.document.upload": "Added a document",
    "store.document.download": "Opened a document",
    "store.event.add": "Recorded a transfer or referral on the chronology",
    "store.ctf.import": "Imported a common transfer file",
    "store.sar.export": "Exported a subject access request",
    "store.sar.removed": "Removed an old subject access export",
    "store.retention.erase": "Erased a pupil's records",
    "store.retention.list": "Listed the pupils due for erasure",
    "store.retention.policy": "Read the retention policy",
    "store.retention.policy.set": "Changed the retention policy",
    "store.category.add": "Added a category",
    "store.category.update": "Changed a category",
    "store.staff.create": "Added a member of staff",
    "store.staff.update": "Changed a member of staff",
    "store.staff.read": "Read a member of staff's account",
    "store.staff.list": "Listed the staff",
    "store.staff.deactivate": "Deactivated an account",
    "store.organisation.create": "Added an organisation",
    "signin.ok": "Signed in",
    "signin.failed": "Failed to sign in",
    "session.end": "Signed out",
    "stepup.ok": "Confirmed with an authenticator code",
    "totp.enrolled": "Set up an authenticator app",
    "totp.enrolment_started": "Started setting up an authenticator app",
    "totp.failed": "Entered a wrong authenticator code",
    "password.changed": "Changed their password",
    "token.created": "Created an API token",
    "token.revoked": "Revoked an API token",
    "token.used": "Used an API token",
    "account.created": "Created an account",
    "account.roles_changed": "Changed someone's roles",
    "account.password_reset": "Reset someone's password",
    "account.totp_reset": "Reset someone's authenticator",
    "account.locked": "Account locked after wrong attempts",
    "account.unlocked": "Unlocked an account",
    "account.deactivated": "Deactivated an account",
    "account.approval.requested": "Asked for a DSL's approval",
    "account.approval.approved": "Approved an account change",
    "account.approval.declined": "Declined an account change",
    "account.approval.withdrawn": "Withdrew a request for approval",
    "transfer.send": "Sent a leaver's file",
    "transfer.queued": "Queued a leaver's file to send",
    "transfer.sent": "Delivered a leaver's file",
    "transfer.received": "Received a leaver's file",
    "transfer.read": "Opened a received file",
    "transfer.viewed": "Previewed a received file",
    "transfer.accepted": "Accepted a received file",
    "transfer.rejected": "Rejected a received file",
    "transfer.cancelled": "Cancelled sending a file",
    "transfer.resent": "Sent a file again",
    "transfer.failed": "A file could not be sent",
    "referral.drafted": "Started a referral",
    "referral.sent": "Sent a referral",
    "referral.read": "Read a referral",
    "referral.discarded": "Discarded a referral draft",
    "referral.withdrawn": "Withdrew a referral",
    "alert.raised": "Raised an alert",
    "alert.dismissed": "Dismissed an alert",
    "alert.resolved": "An alert was resolved",
    "audit.read": "Used the audit log",
    "audit.witness": "Kept a partner's audit checkpoint",
    "web.error": "A page failed",
}

#: The "What was done" filter: key -> (words, the actions it finds).
ACTION_GROUPS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "opened": ("Opened a pupil's record", ("store.pupil.read", "store.pupil.find")),
    "chronology": ("Read a pupil's chronology", ("store.chronology.read",)),
    "concerns": ("Read a concern", ("store.concern.read", "store.concern.history")),
    "documents": ("Opened a document", ("store.document.download",)),
    "recorded": (
        "Logged or changed a concern, triage, action or contact",
        (
            "store.concern.record",
            "store.concern.amend",
            "store.concern.status",
            "store.triage.record",
            "store.action.add",
            "store.action.complete",
            "store.contact.add",
            "store.document.upload",
        ),
    ),
    "sar": ("Subject access exports", ("store.sar.*",)),
    "transfers": ("Leavers' files sent or received", ("transfer.*",)),
    "referrals": ("Referrals", ("referral.*",)),
    "erasure": ("Erasure and retention", ("store.retention.*", "transfer.retention.*")),
    "signin": (
        "Signing in and out",
        ("signin.*", "session.*", "stepup.*", "totp.*", "password.*"),
    ),
    "accounts": ("Staff accounts", ("account.*", "store.staff.*", "token.*")),
    "audit": ("Use of the audit log", ("audit.*",)),
}

OUTCOME_WORDS: Final[dict[str, str]] = {"ok": "", "refused": "Refused", "failed": "Failed"}


def action_words(action: str) -> str:
    """``store.chronology.read`` as "Read the pupil's chronology"; an action not listed
    here from its parts (``store.thing.do`` as "Thing: do")."""
    known = ACTION_WORDS.get(action)
    if known is not None:
        return known
    parts = action.split(".")
    if parts[0] == "store" and len(parts) > 1:
        parts = parts[1:]
    head = parts[0].replace("_", " ").capitalize()
    rest = " ".join(p.replace("_", " ") for p in parts[1:])
    return f"{head}: {rest}" if rest else head


def group_actions(key: str) -> tuple[str, ...]:
    """The actions the filter ``key`` finds (empty for an unknown key)."""
    return ACTION_GROUPS[key][1] if key in ACTION_GROUPS else ()
