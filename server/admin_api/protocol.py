"""Request and response bodies of the admin API for policy versions."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.registry import Version
from core.routing import Routing


class ChangeRequest(BaseModel):
    reason: str = Field("", max_length=500, description="Kept in the audit trail of every version it touches.")


class PromoteRequest(ChangeRequest):
    canary_percent: float | None = Field(
        None, gt=0, lt=100, description="Make the version the canary for this share of users; omit for active."
    )


class PinnableRequest(ChangeRequest):
    pinnable: bool = Field(description="Whether every caller may pin the version as `chatloop@vN`.")


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


class ErasureRequest(BaseModel):
    """Whose data to erase: an ``account``, or a ``user`` an app named (under the managed key ``api_key``, or under
    every key when it is left out)."""

    model_config = ConfigDict(extra="forbid")

    user: str | None = Field(None, min_length=1, max_length=256)
    api_key: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    account: str | None = Field(None, min_length=1, max_length=32)

    @model_validator(mode="after")
    def _one_principal(self) -> ErasureRequest:
        if (self.user is None) == (self.account is None):
            raise ValueError("name either a user or an account")
        if self.api_key is not None and self.user is None:
            raise ValueError("api_key narrows a user to one key; an account has its own")
        return self
