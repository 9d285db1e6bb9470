"""What the operator knows of an agent's pods and Dapr Components, for status and pruning.

Under Kopf the answers come from indices that the operator's watches fill anyway (`handlers`), so
a status refresh costs no request; `Observed` itself asks the API, for a reconcile run outside
Kopf (tests, tools). Either way the caller sees the same facts. `RestoreBackoff` remembers the
children whose drift was undone lately, so a child fought over is restored with back-off.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any

from . import api, components, model_configs, render
from .components import SeenComponent, seen_component
from .kube import Kube, KubeError, is_controlled_by
from .status import Sidecar, pod_problem, sidecar_of

ChildKey = tuple[str, str, str]  # kind, namespace, name
SecretKey = tuple[str, str]  # namespace, name
# How long a Secret found usable is taken as still usable without asking again, when the Secrets'
# index has not seen it yet: a thousand agents naming one Secret cost one read per this many
# seconds, not one per event.
SECRET_FRESH_SECONDS = 10.0
SecretSeen = tuple[str, frozenset[str]]  # a Secret's resourceVersion and keys (never values)
Problem = tuple[str, str]  # reason, message
STALE = ""  # `status_written` with this version: the index's owner was refused as out of date


def secret_problem_of(
    namespace: str, ref: api.SecretKeyRef, keys: frozenset[str] | None
) -> str | None:
    """Why the API key Secret cannot be used (`keys`: its keys, None: absent), or None."""
    if keys is None:
        return (
            f"Secret {ref.name!r} (spec.model.apiKeySecretRef) not found in namespace {namespace}"
        )
    if ref.key not in keys:
        return f"Secret {ref.name!r} has no key {ref.key!r} (spec.model.apiKeySecretRef.key)"
    return None


def child_key(manifest: Mapping[str, object]) -> ChildKey:
    meta: Mapping[str, str] = manifest["metadata"]  # type: ignore[assignment]
    return (str(manifest["kind"]), meta.get("namespace", ""), meta["name"])


class Observed:
    """The facts, read from the API server when asked."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def sidecars(self, agent: api.AIAgent) -> list[Sidecar]:
        """The Dapr sidecar of each of the agent's pods (terminating ones included)."""
        pods = self.kube.list_pods(agent.namespace, render.selector_labels(agent))
        return [sidecar_of(pod) for pod in pods]

    def stuck_pod(self, agent: api.AIAgent) -> tuple[str, str] | None:
        """(reason, message) of the first of the agent's pods whose container is stuck."""
        return pod_problem(self.kube.list_pods(agent.namespace, render.selector_labels(agent)))

    def secret_problem(self, agent: api.AIAgent) -> str | None:
        """Why the agent's API key Secret cannot be used, or None (also when it names none, and
        when its ModelConfig cannot be used: `model_problem` says why). For a ModelConfig, the
        Secret is the platform's, which the operator copies."""
        if agent.spec.model is not None:
            ref = agent.spec.model.api_key_secret_ref
            if ref is None:
                return None
            keys = self._secret_keys(agent.namespace, ref.name)
            return secret_problem_of(agent.namespace, ref, keys)
        config = self._usable_config(agent)
        if config is None or config.spec.api_key_secret_ref is None:
            return None
        ref = config.spec.api_key_secret_ref
        keys = self._secret_keys(config.namespace, ref.name)
        problem = secret_problem_of(config.namespace, ref, keys)
        where = f"ModelConfig {config.namespace}/{config.name}"
        return problem and f"{where}: {problem.replace('spec.model.', 'spec.')}"

    def model_problem(self, agent: api.AIAgent) -> Problem | None:
        """(reason, message) when the agent's ModelConfig cannot be used; None otherwise."""
        key = model_configs.config_key(agent)
        if key is None:
            return None
        try:
            model_configs.check(agent, self.model_config(*key))
        except model_configs.ModelConfigProblem as problem:
            return problem.reason, problem.message
        return None

    def _usable_config(self, agent: api.AIAgent) -> api.ModelConfig | None:
        key = model_configs.config_key(agent)
        config = self.model_config(*key) if key else None
        return config if config is not None and config.allows(agent.namespace) else None

    def effective(self, agent: api.AIAgent) -> api.AIAgent:
        """The agent as rendered: its ModelConfig resolved, the versions of the Secrets its pods
        read, its shared budget (`model_configs.effective`). Raises ModelConfigProblem."""
        key = model_configs.config_key(agent)
        config = self.model_config(*key) if key else None
        versions = {
            secret: self.secret_version(*secret)
            for secret in model_configs.secrets_read(agent, config)
        }
        sharing: list[api.AIAgent] = []
        if key and config is not None and config.spec.namespace_budget is not None:
            sharing = self.sharing(agent, key)
        return model_configs.effective(agent, config, versions, sharing)

    def model_config(self, namespace: str, name: str) -> api.ModelConfig | None:
        """The ModelConfig, or None when there is none (or no such kind yet)."""
        try:
            body = self.kube.get(api.API_VERSION, api.MODEL_CONFIG_KIND, namespace, name)
        except KubeError as exc:
            if exc.no_such_api:
                return None
            raise
        return None if body is None else api.ModelConfig.from_body(body)

    def secret_version(self, namespace: str, name: str) -> str | None:
        """The Secret's resourceVersion, or None when it does not exist."""
        secret = self.kube.get("v1", "Secret", namespace, name)
        return None if secret is None else str(secret["metadata"].get("resourceVersion", ""))

    def sharing(self, agent: api.AIAgent, key: tuple[str, str]) -> list[api.AIAgent]:
        """The agents of the agent's namespace that use the ModelConfig `key`."""
        items = self.kube.list(api.API_VERSION, api.KIND, agent.namespace, {})
        agents = [api.AIAgent.from_body(item) for item in items]
        return [a for a in agents if model_configs.config_key(a) == key and not a.deleting]

    def _secret_keys(self, namespace: str, name: str) -> frozenset[str] | None:
        return self.kube.secret_keys(namespace, name)

    def component(self, namespace: str, name: str, *, confirm: bool = True) -> SeenComponent | None:
        """The Component of that name, or None. Raises KubeError (`no_such_api`) where the cluster
        has no Dapr. `confirm=False` accepts "not seen" for "absent" (a create will tell)."""
        body = self.kube.get(components.API_VERSION, components.KIND, namespace, name)
        return seen_component(body) if body is not None else None

    def deployment(self, agent: api.AIAgent) -> dict[str, Any] | None:
        """The agent's Deployment (at least its `status.deployment_facts`), or None."""
        deployment = self.kube.get("apps/v1", "Deployment", agent.namespace, agent.name)
        return deployment if deployment and is_controlled_by(deployment, agent.uid) else None

    def current_owner(self, owner: api.AIAgent) -> api.AIAgent | None:
        """The owner as it is now, or None when it is gone, replaced (another uid) or being
        deleted. Asked of the API."""
        fresh = self.kube.get(api.API_VERSION, api.KIND, owner.namespace, owner.name)
        if fresh is None or fresh["metadata"]["uid"] != owner.uid:
            return None
        agent = api.AIAgent.from_body(fresh)
        return None if agent.deleting else agent

    def status_written(self, agent: api.AIAgent, resource_version: str) -> None:
        """Note that this process wrote the agent's status, which made it `resource_version`."""

    def unchanged(self, manifest: Mapping[str, object], digest: str) -> bool:
        """Whether the live child already is this rendered child (digest `digest`); asked of
        the API, nothing is known: apply."""
        return False

    def applied(self, manifest: Mapping[str, object], digest: str, version: str = "") -> None:
        """Note that the child was just applied with `digest`, which made it `version`."""

    def may_have(self, key: ChildKey) -> bool:
        """Whether the child may exist (asked of the API, it may: look)."""
        return True

    def key_copy_tampered(self, copy: Mapping[str, Any]) -> bool:
        """Whether a key copy was changed by someone else (nothing known here: no)."""
        return False

    def owned_components(self, agent: api.AIAgent) -> set[str]:
        """Names of the Components this agent controls (none where the cluster has no Dapr)."""
        try:
            items = self.kube.list(
                components.API_VERSION,
                components.KIND,
                agent.namespace,
                {render.AGENT_LABEL: agent.name},
            )
        except KubeError as exc:
            if exc.no_such_api:
                return set()
            raise
        return {item["metadata"]["name"] for item in items if is_controlled_by(item, agent.uid)}


class IndexedObserved(Observed):
    """The facts from Kopf's indices: pods by (namespace, agent name), Components by
    (namespace, name), the names of Components by their controller's uid, the agents'
    Deployments (`deployment_facts`) by (namespace, name), and the applied digest of every other
    child by (kind, namespace, name); and Secrets found usable a moment ago."""

    def __init__(
        self,
        kube: Kube,
        pods: Mapping[tuple[str, str], Iterable[Sidecar]],
        components_by_name: Mapping[tuple[str, str], Iterable[SeenComponent]],
        components_by_owner: Mapping[str, Iterable[str]],
        applied_digests: Sequence[Mapping[ChildKey, Iterable[str]]] = (),
        deployments: Mapping[tuple[str, str], Iterable[dict[str, Any]]] | None = None,
        applied_here: MutableMapping[ChildKey, str] | None = None,
        secrets_seen: MutableMapping[SecretKey, tuple[float, frozenset[str]]] | None = None,
        status_versions: MutableMapping[str, str] | None = None,
        model_configs_by_name: Mapping[tuple[str, str], Iterable[api.ModelConfig]] | None = None,
        secrets: Mapping[tuple[str, str], Iterable[SecretSeen]] | None = None,
        agents: Mapping[tuple[str, str], Iterable[api.AIAgent]] | None = None,
        copy_versions: MutableMapping[ChildKey, str] | None = None,
        *,
        asking: bool = True,
    ) -> None:
        super().__init__(kube)
        # False: what the indices lack does not exist (no request, for Kopf's event loop).
        self._asking = asking
        self._copy_versions = copy_versions if copy_versions is not None else {}
        self._configs = model_configs_by_name if model_configs_by_name is not None else {}
        self._secret_index = secrets if secrets is not None else {}
        self._agents = agents if agents is not None else {}
        self._pods = pods
        self._components = components_by_name
        self._owned = components_by_owner
        self._digests = applied_digests
        self._deployments = deployments if deployments is not None else {}
        self._mine = applied_here if applied_here is not None else {}
        self._secrets = secrets_seen if secrets_seen is not None else {}
        self._written = status_versions if status_versions is not None else {}

    def current_owner(self, owner: api.AIAgent) -> api.AIAgent | None:
        # The index's owner is taken as current, unless a write from it was refused since: a
        # write from it is conditional (`if_unchanged`), so an index behind the API server
        # (this process's own last write not seen yet, or someone else's) costs one 409, after
        # which the caller marks it (`status_written(agent, STALE)`) and the owner is asked for.
        # Asking whenever the index's version is not the one our last write made cost a GET
        # per agent: Kopf's own annotation patch follows each reconcile's status write.
        if self._written.get(owner.uid) != STALE:
            return None if owner.deleting else owner
        fresh = super().current_owner(owner)
        if fresh is not None:
            self._written[owner.uid] = fresh.resource_version  # current again, as read
        return fresh

    def status_written(self, agent: api.AIAgent, resource_version: str) -> None:
        self._written[agent.uid] = resource_version

    def model_config(self, namespace: str, name: str) -> api.ModelConfig | None:
        for config in self._configs.get((namespace, name), ()):
            return config
        # Created a moment ago, or absent: ask.
        return super().model_config(namespace, name) if self._asking else None

    def secret_version(self, namespace: str, name: str) -> str | None:
        for version, _ in self._secret_index.get((namespace, name), ()):
            return version
        return super().secret_version(namespace, name) if self._asking else None

    def may_have(self, key: ChildKey) -> bool:
        return key in self._mine or bool(self._digests_of(key))

    def key_copy_tampered(self, copy: Mapping[str, Any]) -> bool:
        """Whether a key copy's version is not the one this process's last apply made."""
        version = str(copy["metadata"].get("resourceVersion", ""))
        return self._copy_versions.get(child_key(copy)) != version

    def sharing(self, agent: api.AIAgent, key: tuple[str, str]) -> list[api.AIAgent]:
        return [
            other
            for (namespace, _), others in self._agents.items()
            if namespace == agent.namespace
            for other in others
            if model_configs.config_key(other) == key and not other.deleting
        ]

    def _secret_keys(self, namespace: str, name: str) -> frozenset[str] | None:
        for _, indexed in self._secret_index.get((namespace, name), ()):
            return indexed
        if not self._asking:
            return None
        seen = self._secrets.get((namespace, name))
        if seen is not None and time.monotonic() - seen[0] < SECRET_FRESH_SECONDS:
            return seen[1]
        keys = super()._secret_keys(namespace, name)
        if keys is None:
            self._secrets.pop((namespace, name), None)  # absent: asked again every time
        else:
            self._secrets[(namespace, name)] = (time.monotonic(), keys)
        return keys

    def unchanged(self, manifest: Mapping[str, object], digest: str) -> bool:
        # The index follows the watch streams and may lag behind this process's own applies
        # (A, then B, then A again: it may still say A). So what this process applied last
        # must agree too; after a restart the index, just listed, is all there is.
        key = child_key(manifest)
        if self._mine.get(key, digest) != digest:
            return False
        return digest in self._digests_of(key)

    def _digests_of(self, key: ChildKey) -> list[str]:
        kind, namespace, name = key
        if kind == "Deployment":
            facts = self._deployments.get((namespace, name), ())
            return [f["metadata"]["annotations"].get(render.APPLIED_HASH_ANNOTATION) for f in facts]
        return [d for index in self._digests for d in index.get(key, ())]

    def deployment(self, agent: api.AIAgent) -> dict[str, Any] | None:
        # As the Deployment's watch stream has it; not seen yet (applied a moment ago): asked.
        for facts in self._deployments.get((agent.namespace, agent.name), ()):
            return facts if is_controlled_by(facts, agent.uid) else super().deployment(agent)
        return super().deployment(agent)

    def applied(self, manifest: Mapping[str, object], digest: str, version: str = "") -> None:
        key = child_key(manifest)
        self._mine[key] = digest
        if key[0] == "Secret":
            # A key copy's value is not in its digest (nor in what the watch brings): a version
            # this process did not write means someone else changed it (`key_copy_tampered`).
            self._copy_versions[key] = version

    def sidecars(self, agent: api.AIAgent) -> list[Sidecar]:
        return list(self._pods.get((agent.namespace, agent.name), ()))

    def stuck_pod(self, agent: api.AIAgent) -> tuple[str, str] | None:
        pods = sorted(self.sidecars(agent), key=lambda s: s.pod)
        return next((s.stuck for s in pods if s.stuck and not s.terminating), None)

    def component(self, namespace: str, name: str, *, confirm: bool = True) -> SeenComponent | None:
        for seen in self._components.get((namespace, name), ()):
            return seen
        # Not in the index: absent, created a moment ago, or no Dapr API at all; ask.
        return super().component(namespace, name) if confirm else None

    def owned_components(self, agent: api.AIAgent) -> set[str]:
        return set(self._owned.get(agent.uid, ()))


class RestoreBackoff:
    """When to restore a child that drifts again and again (someone else keeps setting a field
    we own): the first `free` restores at once, then each one `base`, 2·`base`, 4·`base` ...
    (at most `cap`) seconds after the one before, so a fight with another writer costs a few
    writes a minute, not a tight loop. A child that stays as wanted for `quiet` seconds after a
    restore starts afresh. Keyed by (kind, namespace, name); this process's memory only."""

    def __init__(
        self,
        *,
        free: int = 2,
        base: float = 2.0,
        cap: float = 300.0,
        quiet: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free, self.base, self.cap, self.quiet = free, base, cap, quiet
        self._clock = clock
        self._restores: dict[ChildKey, tuple[int, float]] = {}  # count, time of the last
        self._warned: set[ChildKey] = set()

    def wait(self, key: ChildKey) -> float:
        """Seconds to wait before restoring the child's drift seen now (0: restore now)."""
        seen = self._restores.get(key)
        if seen is None:
            return 0.0
        count, last = seen
        now = self._clock()
        if now - last > self.quiet:
            self.forget(key)  # left alone long enough: a new drift is news, not a fight
            return 0.0
        if count < self.free:
            return 0.0
        return max(0.0, last + min(self.base * 2.0 ** (count - self.free), self.cap) - now)

    def restored(self, key: ChildKey) -> int:
        """Count a restore made now; returns how many this episode has had."""
        now = self._clock()
        count = self._restores.get(key, (0, now))[0] + 1
        self._restores[key] = (count, now)
        # Episodes long over would start afresh anyway: keep the map to the live ones.
        for other, (_, last) in list(self._restores.items()):
            if now - last > self.quiet + self.cap:
                self.forget(other)
        return count

    def restored_count(self, key: ChildKey) -> int:
        return self._restores.get(key, (0, 0.0))[0]

    def first_warning(self, key: ChildKey) -> bool:
        """True once per episode: the moment to say at WARNING that the child is fought over."""
        if key in self._warned:
            return False
        self._warned.add(key)
        return True

    def forget(self, key: ChildKey) -> None:
        self._restores.pop(key, None)
        self._warned.discard(key)

    def __len__(self) -> int:
        return len(self._restores)


def other_writer(obj: Mapping[str, Any], ours: str) -> str | None:
    """Who last changed the object besides `ours`, as its managedFields tell: the newest entry
    of another field manager that set more than metadata (a controller that only stamps an
    annotation, or writes status, is not who changed a spec), else the newest of any other."""
    entries = [
        entry
        for entry in (obj.get("metadata") or {}).get("managedFields") or []
        if isinstance(entry, dict)
        and entry.get("manager") != ours
        and entry.get("subresource") != "status"
    ]
    if not entries:
        return None
    entries.sort(key=lambda entry: str(entry.get("time") or ""), reverse=True)
    beyond_metadata = [
        entry
        for entry in entries
        if set(entry.get("fieldsV1") or {}) - {"f:metadata", "f:apiVersion", "f:kind"}
    ]
    return str((beyond_metadata or entries)[0].get("manager") or "") or None
