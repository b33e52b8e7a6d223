"""The alert policy, pure: per unit and rule, ok → pending → firing → resolved.

Imports only ``monitor.risk`` (contract ``pure``: no I/O library, no clock of its own: the time is
passed in). ``policy`` is the state machine, ``rules`` its rules and events, ``state`` the export and
import of its state, ``opinion`` the comparison with Binance's own margin status.
"""
