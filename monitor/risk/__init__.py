"""The maths, pure: margin levels, liquidation distances, the account book and its hot path.

No I/O and no import from any other layer of monitor/ (import-linter contract ``pure``): values in,
values out. ``margin`` and ``unit`` are the exact ``Decimal`` formulas; ``book`` is the public face
of the per-tick float path (``_fanout``, ``_legs`` are its private internals); ``prices`` routes an
asset to live symbols; ``ledger`` decides when balances, liabilities and REST agree; ``report`` is
what every surface shows of a unit; ``stress`` the what-if table.
"""
