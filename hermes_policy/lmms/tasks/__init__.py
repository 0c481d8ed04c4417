"""Bundled lmms-eval task folders (``--include_path`` :func:`hermes_policy.lmms.tasks_path`)."""
