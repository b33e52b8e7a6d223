"""The daemon's assembly, below ``monitor.service`` and above everything it wires together.

``components`` resolves the config once into one frozen set of parts (``resolve`` → ``Components``:
state file, exchange endpoints, watchers, policy, engine, delivery, feeds, recorder), closing what it
opened on failure; ``periodic`` holds the periodic jobs (the once-a-second steps, in their documented
order, and the slower re-reads, resync, catalog and history); ``outflow`` takes the engine's events to
the dispatcher; ``loading`` keeps the background tasks and retries accounts not loaded; ``views`` is
what the HTTP surfaces read; ``feeds`` logs each feed's state. May import every layer below the
service, and ``monitor.endpoints`` (the one place the simulator is started); never ``monitor.sim`` itself.
"""
