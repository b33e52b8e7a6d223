"""Delivery: what a trader reads and how it reaches them, as a chain of named stages.

route → silence → flood control → outbox (persist, dedupe) → retry → send, each a module with one
``exec`` (``stages.py``), composed by ``dispatcher.py`` (Alertmanager's notify pipeline is the model).
``messages`` renders an alert; ``apprise_sink``/``plugins``/``console`` are the senders;
``send_check`` is ``test-alert``, which uses only the route and send stages (no state file).
"""
