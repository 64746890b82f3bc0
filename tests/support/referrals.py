"""Forms and a school with agencies in its directory, for the referral tests."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from keys.keyfiles import KeyFiles
from keys.keyset import KeySet
from keys.sealing import KekProtection
from tests.integration.store.conftest import KEK, SCHOOL_URN, School
from transfer.age import X25519Identity
from transfer.directory.document import entry_from_keyset
from transfer.directory.service import Directory
from transfer.referrals.service import Referrals

KEYS_AT = datetime(2026, 1, 1, tzinfo=UTC)

REFERRER: dict[str, Any] = {
    "name": "Dana Lead",
    "role": "Designated Safeguarding Lead",
    "agency": "Harbourside Primary",
    "phone": "0117 496 0000",
    "email": "dsl@harbourside.example",
}
CONSENT_GIVEN: dict[str, Any] = {"parents_aware": True, "consent_given": True}
CONSENT_RISK: dict[str, Any] = {
    "parents_aware": False,
    "consent_given": False,
    "no_consent_reason": "greater_risk",
    "explanation": "Stepfather is the alleged perpetrator.",
}
CHILD: dict[str, Any] = {
    "forename": "Amara",
    "surname": "Okafor",
    "dob": "2014-11-03",
    "address": "1 Quay Street, Bristol",
    "sex": "female",
    "upn": "H801200001001",
}


def mash_form(**changes: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "kind": "social_care",
        "request": "safeguarding",
        "child": dict(CHILD),
        "carers": [
            {"name": "Grace Okafor", "relationship": "mother", "parental_responsibility": True}
        ],
        "referrer": dict(REFERRER),
        "consent": dict(CONSENT_GIVEN),
        "reason": "Amara disclosed being hit at home.",
        "harm_types": ["physical"],
        "impact_on_child": "Withdrawn, frightened to go home.",
        "risk_rating": "high",
        "risk_reasons": "Repeated disclosures, visible bruising.",
    }
    form.update(copy.deepcopy(changes))
    return form


def lado_form(known_at: str = "2026-09-07T10:00:00+01:00", **changes: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "kind": "lado",
        "employer": {"organisation": "Harbourside Primary", "head_teacher": "Mr Head"},
        "adult": {
            "forename": "Sam",
            "surname": "Teacher",
            "sex": "male",
            "role": "Class teacher",
            "workplace": "Harbourside Primary",
            "employment_basis": "permanent",
        },
        "allegation": {
            "category": "physical",
            "happened_on": "2026-09-07",
            "place": "Classroom 4",
            "description": "Grabbed a pupil by the arm.",
            "known_at": known_at,
            "made_by": "Amara Okafor",
            "made_by_relationship": "pupil",
        },
        "children": [{"forename": "Amara", "surname": "Okafor", "dob": "2014-11-03"}],
        "criteria": ["harmed_child"],
        "actions_so_far": "Adult sent home pending advice.",
        "referrer": dict(REFERRER),
        "consent": dict(CONSENT_GIVEN),
    }
    form.update(copy.deepcopy(changes))
    return form


def police_form(**changes: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "kind": "police",
        "child": dict(CHILD),
        "what_happened": "Images of the child were shared online.",
        "happened_at": "2026-09-06T20:00:00+01:00",
        "place": "Online",
        "immediate_risk": False,
        "referrer": dict(REFERRER),
        "consent": dict(CONSENT_GIVEN),
    }
    form.update(copy.deepcopy(changes))
    return form


AgencyKind = Literal["social_care", "lado", "police", "school"]


@dataclass
class Agency:
    keyset: KeySet
    name: str

    @property
    def org_id(self) -> str:
        return self.keyset.org_id

    @property
    def identity(self) -> X25519Identity:
        return X25519Identity.from_private_bytes(self.keyset.encryption.secret)


@dataclass
class Setting:
    school: School
    keys: KeyFiles
    directory: Directory
    referrals: Referrals
    school_keys: KeySet
    agencies: dict[str, Agency] = field(default_factory=dict)


async def add_agency(
    directory: Directory,
    org_id: str,
    name: str,
    kind: AgencyKind,
    *,
    endpoint: str | None = None,
    email: str | None = None,
) -> Agency:
    keyset = KeySet.generate(org_id, now=KEYS_AT)
    entry = entry_from_keyset(keyset, name=name, kind=kind, endpoint=endpoint, email=email)
    await directory.add_local(entry, fingerprint=entry.fingerprint, actor=None)
    return Agency(keyset, name)


async def make_setting(school: School, data_dir: Path, **kwargs: Any) -> Setting:
    keys = KeyFiles.for_data_dir(data_dir, KekProtection(KEK))
    school_keys = await keys.create(SCHOOL_URN)
    directory = Directory(school.store, keys=keys)
    setting = Setting(
        school=school,
        keys=keys,
        directory=directory,
        referrals=Referrals(school.store, keys, directory, **kwargs),
        school_keys=school_keys,
    )
    agencies: tuple[tuple[str, str, AgencyKind], ...] = (
        ("mash-bristol", "Bristol MASH", "social_care"),
        ("lado-bristol", "Bristol LADO", "lado"),
        ("police-avon", "Avon and Somerset Police", "police"),
    )
    for org_id, name, kind in agencies:
        setting.agencies[kind] = await add_agency(
            directory, org_id, name, kind, email=f"{org_id}@agency.example"
        )
    return setting
