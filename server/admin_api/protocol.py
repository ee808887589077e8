"""Request and response bodies of the admin API for policy versions."""

from __future__ import annotations

from pydantic import BaseModel, Field

from core.registry import Version
from core.routing import Routing


class ChangeRequest(BaseModel):
    reason: str = Field("", max_length=500, description="Kept in the audit trail of every version it touches.")


class PromoteRequest(ChangeRequest):
    canary_percent: float | None = Field(
        None, gt=0, lt=100, description="Make the version the canary for this share of users; omit for active."
    )


class RoutingView(BaseModel):
    stored: Routing
    """What the registry says."""
    applied: Routing | None
    """What the server that answered serves (None while its engine loads); it differs from ``stored`` only while a
    change is being applied, or where a version failed to load."""


class VersionView(Version):
    lineage: list[str]
    """This version, its parent, ... down to ``base``."""
    load_errors: dict[str, object] | None = None
    """The last failure of a server to load this version."""


class VersionList(BaseModel):
    object: str = "list"
    routing: RoutingView
    data: list[VersionView]
