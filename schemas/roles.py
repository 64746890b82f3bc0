"""Staff roles and the permissions they grant, as values (the rules are in
``transfer.store.permissions``). Here so that the API's bodies (``schemas.api``) can
name them while ``schemas`` stays a leaf."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Permission", "Role"]


class Role(StrEnum):
    DSL = "dsl"
    DEPUTY_DSL = "deputy_dsl"
    HEAD_TEACHER = "head_teacher"
    STAFF = "staff"
    ADMINISTRATOR = "administrator"
    AUDITOR = "auditor"


class Permission(StrEnum):
    MANAGE_STAFF = "staff.manage"
    #: Approve (or decline) an account change that the two-person rule holds back.
    APPROVE_STAFF_CHANGES = "staff.approve"
    MANAGE_PUPILS = "pupil.manage"
    READ_PUPILS = "pupil.read"
    IMPORT_CTF = "ctf.import"
    RECORD_CONCERN = "concern.record"
    READ_ALL_CONCERNS = "concern.read_all"
    TRIAGE = "concern.triage"
    MANAGE_ACTIONS = "action.manage"
    MANAGE_CONTACTS = "contact.manage"
    MANAGE_DOCUMENTS = "document.manage"
    READ_CHRONOLOGY = "chronology.read"
    READ_RESTRICTED = "category.restricted.read"
    EXPORT_SUBJECT_ACCESS = "sar.export"
    RUN_RETENTION = "retention.run"
    MANAGE_CATEGORIES = "category.manage"
    READ_AUDIT = "audit.read"
    SEND_TRANSFER = "transfer.send"
    RECEIVE_TRANSFER = "transfer.receive"
    SEND_REFERRAL = "referral.send"
    SEND_WITHOUT_CONSENT = "referral.without_consent"
    MANAGE_KEYS = "keys.manage"
    #: See and dismiss the DSL team's alerts (deadlines, transfer requests, referrals).
    HANDLE_ALERTS = "alert.handle"
    #: Read the safeguarding reports (the governors' report): counts, never content.
    READ_REPORTS = "report.read"
