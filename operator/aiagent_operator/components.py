"""Dapr Components of an AIAgent, pure: the ones it declares inline (`spec.dapr.stateStore` or
`spec.dapr.pubsub` with a `type`) rendered as `dapr.io/v1alpha1` Components, and what a Component
found in the cluster means for the agent (usable, missing, someone else's, scoped away). No I/O.

An inline Component is a child like the others (labels, controller ownerReference, pruned when the
spec drops it) but named by the spec, not after the agent, so two agents may ask for the same name:
the first one keeps it, the second is told so (see `reconcile.sync_components`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from . import api, render
from .render import Manifest

API_VERSION = "dapr.io/v1alpha1"
KIND = "Component"
PLURAL = "components"
DEFAULT_VERSION = "v1"
# Where the Component's type tells what it is, per spec field.
TYPE_PREFIX = {"spec.dapr.stateStore": "state.", "spec.dapr.pubsub": "pubsub."}


def component_refs(agent: api.AIAgent) -> list[tuple[str, api.DaprComponentRef]]:
    """(spec field, reference) of every Component the agent uses; none while Dapr is off."""
    dapr = agent.spec.dapr
    return dapr.components() if dapr.enabled else []


def render_component(agent: api.AIAgent, ref: api.DaprComponentRef) -> Manifest:
    """One inline Component, scoped to the agent's app id so no other app in the namespace
    loads it. A secretKeyRef stays a reference: with no `auth.secretStore`, Dapr resolves it
    from the Kubernetes Secret in the Component's namespace (its built-in Kubernetes store)."""
    metadata: list[dict[str, Any]] = []
    for entry in ref.metadata:
        if entry.secret_key_ref is not None:
            secret = entry.secret_key_ref
            metadata.append(
                {"name": entry.name, "secretKeyRef": {"name": secret.name, "key": secret.key}}
            )
        else:
            metadata.append({"name": entry.name, "value": entry.value})
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": ref.name,
            "namespace": agent.namespace,
            "labels": render.common_labels(agent),
            "ownerReferences": [render.owner_reference(agent)],
        },
        "spec": {
            "type": ref.type,
            "version": ref.version or DEFAULT_VERSION,
            "metadata": metadata,
        },
        "scopes": [render.dapr_app_id(agent)],
    }


def render_components(agent: api.AIAgent) -> list[Manifest]:
    """The Components the operator creates for the agent (the inline ones), in spec order."""
    return [render_component(agent, ref) for _, ref in component_refs(agent) if ref.type]


@dataclass(frozen=True)
class SeenComponent:
    """What the operator needs to know of a Component in the cluster (never its metadata, which
    may hold values a person put there)."""

    type: str
    scopes: tuple[str, ...]
    controller_uid: str | None  # the uid of its controller (an AIAgent, if ours), if any
    controller: str | None  # "AIAgent support-bot", for messages


def seen_component(body: Any) -> SeenComponent:
    meta = body.get("metadata") or {}
    controller = next(
        (ref for ref in meta.get("ownerReferences") or [] if ref.get("controller")), None
    )
    return SeenComponent(
        type=str((body.get("spec") or {}).get("type") or ""),
        scopes=tuple(body.get("scopes") or ()),
        controller_uid=controller.get("uid") if controller else None,
        controller=f"{controller.get('kind')} {controller.get('name')}" if controller else None,
    )


# What became of one Component reference, from the most to the least severe.
Verdict = Literal["NoDaprAPI", "Conflict", "Missing", "WrongType", "NotScoped", "Ok"]


@dataclass(frozen=True)
class ComponentFact:
    """One Component reference of the agent and what the cluster says about it."""

    field: str  # spec.dapr.stateStore or spec.dapr.pubsub
    name: str
    inline: bool  # the operator creates it (type set)
    verdict: Verdict
    detail: str = ""  # the other controller, the actual type, the scopes

    def problem(self, namespace: str, app: str) -> tuple[str, str] | None:
        """(DaprReady reason, message naming the Component and the field), or None."""
        what = f"Component {self.name!r} named by {self.field}"
        if self.verdict == "NoDaprAPI":
            return (
                "DaprNotInstalled",
                f"{what} cannot be {'created' if self.inline else 'found'}: the cluster has no "
                "components.dapr.io API (install Dapr, its CRDs and control plane)",
            )
        if self.verdict == "Conflict":
            owner = (
                f", managed by {self.detail}"
                if self.detail
                else (" and is not managed by this AIAgent")
            )
            return (
                "ComponentConflict",
                f"{what} already exists in namespace {namespace}{owner}: choose another "
                f"{self.field}.name, or drop {self.field}.type to use that Component as it is",
            )
        if self.verdict == "Missing":
            return (
                "ComponentMissing",
                f"{what} does not exist in namespace {namespace}"
                + (" yet" if self.inline else f" (create it, or set {self.field}.type)"),
            )
        if self.verdict == "WrongType":
            return (
                "ComponentWrongType",
                f"{what} has type {self.detail!r}; {self.field} needs a "
                f"{TYPE_PREFIX[self.field]}* component",
            )
        if self.verdict == "NotScoped":
            return (
                "ComponentNotScoped",
                f"{what} is scoped to {self.detail}, not to app id {app!r}: add {app!r} to its "
                "scopes, or the sidecar will not load it",
            )
        return None


def judge(
    agent: api.AIAgent, field: str, ref: api.DaprComponentRef, seen: SeenComponent | None
) -> ComponentFact:
    """What a Component found in the cluster (None: not there) means for one reference."""
    fact = ComponentFact(field=field, name=ref.name, inline=bool(ref.type), verdict="Ok")

    def verdict(value: Verdict, detail: str = "") -> ComponentFact:
        return ComponentFact(fact.field, fact.name, fact.inline, value, detail)

    if seen is None:
        return verdict("Missing")
    if ref.type:
        if seen.controller_uid != agent.uid:
            return verdict("Conflict", seen.controller or "")
        return fact
    if not seen.type.startswith(TYPE_PREFIX[field]):
        return verdict("WrongType", seen.type)
    if seen.scopes and render.dapr_app_id(agent) not in seen.scopes:
        return verdict("NotScoped", "[" + ", ".join(seen.scopes) + "]")
    return fact


def no_dapr_api(field: str, ref: api.DaprComponentRef) -> ComponentFact:
    return ComponentFact(field=field, name=ref.name, inline=bool(ref.type), verdict="NoDaprAPI")
