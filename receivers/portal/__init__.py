"""Route 2 of a referral: the pickup portal for an agency without a node (``docs/portal.md``)."""

from __future__ import annotations

from receivers.portal.records import IssuedPickup, PickupInfo
from receivers.portal.service import (
    AcknowledgementSink,
    PickupMailer,
    PickupPortal,
    PortalSettings,
)

__all__ = [
    "AcknowledgementSink",
    "IssuedPickup",
    "PickupInfo",
    "PickupMailer",
    "PickupPortal",
    "PortalSettings",
]
