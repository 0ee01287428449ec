"""API bodies of the monitoring side: audit trail, event search, device logs, feedback, notices."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from edgeota.server.schemas import Strict

FEEDBACK_COMMENT_CHARS = 1000
NEGATIVE_RATING_MAX = 2  # ratings 1 and 2 are negative, 3 is neutral, 4 and 5 positive


class AuditPublic(BaseModel):
    id: int
    time: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    details: dict[str, Any]


class DeviceEventPublic(BaseModel):
    """A device event as found by a search across devices."""

    device_id: str
    seq: int
    time: datetime
    received_at: datetime
    event: str
    component: str | None
    state: str | None
    release_id: str | None
    version: str | None
    reason: str | None
    detail: dict[str, Any]


class DeviceLogPublic(BaseModel):
    id: int
    device_id: str
    component: str | None
    release_id: str | None
    event: str | None
    uploaded_at: datetime
    size: int


class FeedbackCreate(Strict):
    """A device user's word on a release: a rating and an optional short comment.

    Nothing else is accepted (``extra`` fields are refused): feedback never carries user
    data or model inputs.
    """

    client_id: str = Field(
        min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="chosen by the device"
    )
    release_id: str = Field(min_length=1, max_length=64)
    rating: int = Field(ge=1, le=5, description="1 (bad) to 5 (good)")
    comment: str = Field(default="", max_length=FEEDBACK_COMMENT_CHARS)
    time: datetime | None = Field(default=None, description="when the user gave it")

    @field_validator("comment")
    @classmethod
    def _comment(cls, v: str) -> str:
        return v.strip()


class FeedbackPublic(BaseModel):
    id: int
    device_id: str
    release_id: str
    rollout_id: int | None
    rating: int
    comment: str
    time: datetime
    received_at: datetime


class FeedbackSummary(BaseModel):
    """Feedback counts: ``ratings`` maps "1".."5" to how many devices gave that rating."""

    count: int
    average: float | None
    negative: int
    negative_share: float | None
    ratings: dict[str, int]


class RolloutFeedbackSummary(FeedbackSummary):
    rollout_id: int | None
    max_negative_feedback_share: float | None = None


class ReleaseFeedbackPublic(BaseModel):
    release_id: str
    component: str
    version: str
    total: FeedbackSummary
    by_rollout: list[RolloutFeedbackSummary]
    recent: list[FeedbackPublic]


class MqttNoticePublic(BaseModel):
    """Where a device hears about changes of its desired state, and as whom it logs in."""

    url: str = Field(description="mqtts://host:port")
    topic: str
    username: str
    password: str


class NoticeChannelPublic(BaseModel):
    mqtt: MqttNoticePublic | None
    long_poll_max_s: int = Field(description="longest ?wait= the check-in accepts; 0: none")


class MqttAuthFilesPublic(BaseModel):
    """A mosquitto ``password_file`` and ``acl_file`` for the enrolled, unrevoked devices."""

    password_file: str
    acl_file: str
    devices: int
