"""Whether to install a desired release: decided on signed data only, with no I/O.

:func:`decide` looks at the signed ``custom`` of the release's targets (component, version,
release, hardware, variant, needs), the component's journal record, and what the device's
other components run (``installed``) or are about to install (``planned``), and answers:

- ``install``: go ahead;
- ``already_installed``: the same release and variant is committed;
- ``wait``: the release needs another component's version that is planned but not installed
  yet (the agent installs that one first, see :func:`edgeota.needs.install_order`);
- ``refuse``: never, with the reason (reported once).

Whether a release that passed its check is held for its set: :mod:`edgeota.agent.sets`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgeota.agent.api_client import DesiredComponent
from edgeota.agent.journal import ComponentRecord
from edgeota.needs import Running, need_met
from edgeota.targets import VerifiedTarget, parse_version

ALREADY = "this release is already installed"


@dataclass(frozen=True)
class Decision:
    action: str  # "install" | "already_installed" | "wait" | "refuse"
    reason: str | None = None


def signed_needs(targets: Sequence[VerifiedTarget]) -> dict[str, str]:
    """The needs the release's targets are signed with (the union over its files)."""
    needs: dict[str, str] = {}
    for t in targets:
        needs.update(t.custom.needs)
    return needs


def signed_variant(targets: Sequence[VerifiedTarget]) -> str | None:
    """The model variant the targets install, or None for a release without variants."""
    return next((t.custom.variant for t in targets if t.custom.role == "model"), None)


def decide(
    component: str,
    desired: DesiredComponent,
    targets: Sequence[VerifiedTarget],
    record: ComponentRecord,
    hardware_class: str,
    installed: Mapping[str, Running],
    planned: Mapping[str, Running] | None = None,
) -> Decision:
    """Whether to install ``desired``, judged on the signed ``custom`` of its ``targets``.

    ``installed`` maps the device's other components to what they run now; ``planned`` to the
    releases they are about to install (desired, not yet committed, not failed here).
    """
    planned = planned or {}

    def refuse(reason: str) -> Decision:
        return Decision("refuse", reason)

    if not targets:
        return refuse("the desired release lists no target files")
    for t in targets:
        c = t.custom
        if c.component != component:
            return refuse(f"{t.path} is signed for component {c.component!r}, not {component!r}")
        if (c.version, c.release_id) != (desired.version, desired.release_id):
            return refuse(
                f"{t.path} is signed as {c.version} ({c.release_id}), but the server asked for "
                f"{desired.version} ({desired.release_id})"
            )
        if not c.fits_hardware(hardware_class):
            return refuse(
                f"{t.path} is signed for hardware {list(c.hardware)}, not {hardware_class!r}"
            )
        if c.role == "patch":
            return refuse(f"{t.path} is a delta patch; this agent installs full files only")
    files = [t.custom.file for t in targets]
    if len(set(files)) != len(files):
        return refuse("two targets of the release install to the same file")
    version = parse_version(desired.version)
    variant = signed_variant(targets)
    if record.committed is not None:
        current = parse_version(record.committed.version)
        if version < current:
            return refuse(
                f"{desired.version} is older than the installed {current}: installed versions "
                "never go down"
            )
        if version == current:
            if desired.release_id != record.committed.release_id:
                return refuse(
                    f"{desired.version} is installed as {record.committed.release_id}; a "
                    f"release with other content ({desired.release_id}) needs a new version"
                )
            committed_variant = record.committed.variant
            if variant is None or committed_variant is None or variant == committed_variant:
                return Decision("already_installed", ALREADY)
            # The same release in another variant (the device's memory budget changed):
            # installed like an update, so a variant that fails its check rolls back.
    if desired.release_id in record.failed_release_ids:
        return refuse(
            f"{desired.release_id} failed its health check on this device; it is not retried "
            "until a newer release is desired"
        )
    return _needs_decision(component, desired.version, signed_needs(targets), installed, planned)


def _needs_decision(
    component: str,
    version: str,
    needs: Mapping[str, str],
    installed: Mapping[str, Running],
    planned: Mapping[str, Running],
) -> Decision:
    # What this release needs of the others: met now, met once a planned release is in, or not.
    for other, spec in sorted(needs.items()):
        have = installed.get(other)
        if need_met(have.version if have else None, spec):
            continue
        coming = planned.get(other)
        if coming is not None and need_met(coming.version, spec):
            return Decision(
                "wait",
                f"waiting for {other} {coming.version}: {component} {version} needs {other} {spec}",
            )
        return Decision(
            "refuse",
            f"release needs {other} {spec}; installed: {have.version if have else 'nothing'}",
        )
    # What the others need of this component: a need this version breaks is fine only when
    # the other component's planned release no longer has it (both go in as one set).
    for other, running in sorted(installed.items()):
        theirs = running.needs.get(component)
        if other == component or theirs is None or need_met(version, theirs):
            continue
        coming = planned.get(other)
        if coming is not None and need_met(version, coming.needs.get(component, ">=0.0.0")):
            continue
        return Decision(
            "refuse",
            f"{component} {version} would break {other} {running.version}, which needs "
            f"{component} {theirs}",
        )
    return Decision("install")
