"""kopf handlers: thin wiring of watches and timers to ``Reconciler``.

Three in-memory indexes (rebuilt from a listing after a restart) feed the reconcile
without API reads: every AudioJob's placement facts, and slim views of the Jobs and pods
this operator made, keyed by their AudioJob's uid. Each unfinished AudioJob gets a timer
that reconciles it; creation, a restart, a waiting GPU request and a Job's progress are
all picked up by the next tick. The ``Reconciler`` (settings, API clients, GPU ledger) lives
in kopf's operator memo, each AudioJob's own state in its per-object memo (``memos``),
which kopf drops with the object. Deleting an unfinished AudioJob deletes its Jobs at
once with foreground propagation (their pods go first); its ConfigMaps go by garbage
collection (owner references). kopf's finalizer also stops the timer (kopf requires it for
timers; why it stays: docs/operator.md, Cancellation). Events are posted through kopf's
background poster (``kopf.event``), never on the reconcile's own path.
"""

from __future__ import annotations

import time
from typing import Any, cast

import kopf
from kubernetes import client, config

from audioproc.models.audiojob import GROUP, PLURAL, VERSION, AudioJobPhase
from audioproc_operator import metrics
from audioproc_operator.builder import LABEL_MANAGED_BY, MANAGED_BY
from audioproc_operator.cluster import KubernetesApi
from audioproc_operator.events import Event
from audioproc_operator.memos import audiojob_memo
from audioproc_operator.reconcile import AudioJobEntry, Reconciler, audiojob_entry
from audioproc_operator.settings import operator_settings
from audioproc_operator.status import JobView, PodView, job_view, pod_view

SETTINGS = operator_settings()
OURS = {LABEL_MANAGED_BY: MANAGED_BY}
#: The key of the ``Reconciler`` in kopf's operator memo (and so in every per-object memo).
RECONCILER_MEMO = "reconciler"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Handler progress in annotations: the structural schema would prune status.kopf.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.persistence.finalizer = f"{GROUP}/operator"
    settings.posting.level = 30  # WARNING: no Event per handler run
    settings.execution.max_workers = SETTINGS.max_workers
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    settings.networking.request_timeout = 30
    # Watching named namespaces needs no cluster-wide namespace listing: without this, a
    # namespaced install (the chart's default Role) waits out kopf's retries of a forbidden
    # GET /api/v1/namespaces before it starts. Globs still need the scan (and a ClusterRole).
    settings.scanning.disabled = bool(SETTINGS.namespaces) and not any(
        c in ns for ns in SETTINGS.namespaces for c in "*?[!,"
    )
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = (
        SETTINGS.max_workers
    )  # one connection per handler thread
    api = KubernetesApi(client.ApiClient(configuration))
    memo[RECONCILER_MEMO] = Reconciler(SETTINGS, api, post_event)
    metrics.serve(SETTINGS.metrics_port)


@kopf.index(GROUP, VERSION, PLURAL)
def audiojobs(body: kopf.Body, **_: Any) -> dict[tuple[str, str], AudioJobEntry]:
    entry = audiojob_entry(dict(body))
    return {(entry.namespace, entry.name): entry}


@kopf.index("batch", "v1", "jobs", labels=OURS)
def jobs(body: kopf.Body, **_: Any) -> dict[str, JobView]:
    view = job_view(dict(body))
    return {view.owner_uid: view}


@kopf.index("", "v1", "pods", labels=OURS)
def pods(body: kopf.Body, **_: Any) -> dict[str, PodView]:
    view = pod_view(dict(body))
    return {view.owner_uid: view}


def unfinished(status: kopf.Status, **_: Any) -> bool:
    phase = status.get("phase")
    return not (phase and AudioJobPhase(phase).finished)


# kopf passes its indices (audiojobs, jobs, pods) as keyword arguments that its TimerFn
# protocol cannot list: the handler is right, the protocol is narrower than kopf's calls.
@kopf.timer(  # type: ignore[arg-type]
    GROUP, VERSION, PLURAL, interval=SETTINGS.reconcile_interval_s, when=unfinished
)
def reconcile(
    body: kopf.Body,
    uid: str,
    audiojobs: kopf.Index[Any, AudioJobEntry],
    jobs: kopf.Index[str, JobView],
    pods: kopf.Index[str, PodView],
    memo: kopf.Memo,
    **_: Any,
) -> None:
    started = time.perf_counter()
    try:
        reconciler(memo).reconcile(
            _plain(body),
            audiojob_memo(memo),
            entries=(entry for store in audiojobs.values() for entry in store),
            jobs=list(jobs.get(uid, [])),
            pods=list(pods.get(uid, [])),
        )
    finally:
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        metrics.observe_phases(entry.phase for store in audiojobs.values() for entry in store)


# kopf passes its index ``jobs`` as a keyword argument (as for the timer above).
@kopf.on.delete(GROUP, VERSION, PLURAL, when=unfinished)  # type: ignore[arg-type]
def delete_jobs(
    body: kopf.Body, uid: str, jobs: kopf.Index[str, JobView], memo: kopf.Memo, **_: Any
) -> None:
    """An unfinished AudioJob is deleted: its Jobs go now, pods first (foreground propagation).

    Without this they would go only once the AudioJob is gone (after kopf's finalizer), by
    garbage collection in the background. Manifests already written are not touched.
    """
    reconciler(memo).delete_jobs(_plain(body), sorted({job.name for job in jobs.get(uid, [])}))


def post_event(audiojob: dict[str, Any], event: Event) -> None:
    """Queue an Event on the AudioJob for kopf's poster (not filtered by ``posting.level``)."""
    kopf.event(
        kopf.Body(cast(kopf.RawBody, audiojob)),
        type=event.type,
        reason=event.reason.value,
        message=event.message,
    )


def reconciler(memo: kopf.Memo) -> Reconciler:
    """The operator's ``Reconciler``, which the start-up handler put in the operator memo."""
    found = memo[RECONCILER_MEMO]
    assert isinstance(found, Reconciler), "the start-up handler sets it"
    return found


def _plain(body: kopf.Body) -> dict[str, Any]:
    return {"metadata": dict(body.metadata), "spec": dict(body.spec), "status": dict(body.status)}
