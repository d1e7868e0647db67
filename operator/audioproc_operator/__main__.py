"""``python -m audioproc_operator`` (or ``audioproc-operator``): run the operator.

One replica (``--standalone``: no peering objects needed); the Helm chart deploys it with
``strategy: Recreate`` so two never run at once. Namespaces come from ``OPERATOR_NAMESPACES``
(empty: the whole cluster).
"""

from __future__ import annotations

import asyncio
import logging

import kopf

from audioproc_operator.settings import operator_settings


def main() -> None:
    settings = operator_settings()
    kopf.configure(log_format=kopf.LogFormat.JSON, verbose=settings.log_level.upper() == "DEBUG")
    logging.getLogger().setLevel(settings.log_level.upper())
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    if settings.log_level.upper() != "DEBUG":
        # kopf logs every timer run at INFO ("Timer 'reconcile' succeeded"): thousands a minute.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    import audioproc_operator.handlers  # noqa: F401  (registers the handlers)

    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
        )
    )


if __name__ == "__main__":
    main()
