"""Distributed execution through Celery (docs/DISTRIBUTED.md).

``app`` builds the Celery application from the configuration; ``executor`` is the
caller's ``CeleryExecutor`` (the planner stays in ``engine.GroupRun``); ``worker``
is what a worker does with one run.  Imported only when ``execution.backend`` is
``celery`` or by the ``worker`` command.
"""
