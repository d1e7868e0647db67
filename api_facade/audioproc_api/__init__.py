"""AudioProcessor's REST facade: the specification's endpoints as AudioJob operations.

``create_app(settings)`` builds the FastAPI application; the backend it talks to is
``kubernetes`` (AudioJob custom resources, reconciled by the operator) or ``local`` (a
bounded pool of worker processes on this machine, task state in SQLite).
"""
