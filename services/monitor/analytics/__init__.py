"""Utilization analytics of the monitor, on faust-streaming (its own worker process).

Run: ``python -m services.monitor.analytics`` (settings from the environment, prefix
``ANALYTICS_``; ``KAFKA_BOOTSTRAP`` and ``KAFKA_TOPIC_PREFIX`` as for every service).
``docs/adr/0004-utilization-analytics.md`` says why it is a worker of its own and why the
discrepancy checks stay on the database kit.
"""
