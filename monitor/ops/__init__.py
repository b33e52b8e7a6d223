"""Operations surfaces: HTTP (``/metrics``, ``/healthz``, ``/readyz``, ``/status``, the page), Prometheus
collectors, systemd notify, the heartbeat, the level history and its recorder, the loop-lag probe.

Reads the book, the policy and delivery's counters; never changes them.
"""
