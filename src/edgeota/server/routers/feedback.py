"""Feedback from device users: devices send it, operators read it per release and rollout."""

from __future__ import annotations

from fastapi import APIRouter, status

from edgeota.server.deps import AdminDep, DeviceDep, SessionDep
from edgeota.server.schemas_monitoring import (
    FeedbackCreate,
    FeedbackPublic,
    ReleaseFeedbackPublic,
)
from edgeota.server.services import devices, feedback

router = APIRouter(prefix="/api/v1", tags=["feedback"])


@router.post(
    "/devices/{device_id}/feedback",
    response_model=FeedbackPublic,
    status_code=status.HTTP_201_CREATED,
)
def post_feedback(
    device_id: str, body: FeedbackCreate, device: DeviceDep, session: SessionDep
) -> FeedbackPublic:
    """A rating (1-5) and a short comment on a release, as the device's user gave them.

    Resending the same ``client_id`` stores nothing new and answers with the stored report.
    """
    devices.require_self(device, device_id)
    return feedback.to_public(feedback.submit(session, device, body))


@router.get("/releases/{release_ref}/feedback", response_model=ReleaseFeedbackPublic)
def release_feedback(release_ref: str, _: AdminDep, session: SessionDep) -> ReleaseFeedbackPublic:
    """Each device's newest rating, summed for the release and for each rollout of it."""
    return feedback.for_release(session, release_ref)
