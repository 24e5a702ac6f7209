"""Audit every Python source file of the standard library, one taskflow job per file.

    python -m examples.stdlib_audit.demo          # worker + producer, end to end

or by hand, in two terminals (from the repository root)::

    taskflow worker examples.stdlib_audit.tasks:app -c 8
    python -m examples.stdlib_audit.run

Without ``$TASKFLOW_BROKER_URL`` both use the embedded server of ``./.taskflow``.
"""
