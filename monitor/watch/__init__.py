"""Live accounts: the glue from the exchange's events to the book, the policy and the outbox.

``accounts.AccountWatcher`` coordinates one account (``keys``, ``snapshots``, ``events``,
``settling``, ``rereads``, ``staleness``, ``notices``); ``engine`` is the tick glue (prices → units that
left their band → policy → queued alerts); ``ladder`` and ``routing`` turn the config into rules and
routes; ``catalog`` shares exchangeInfo; ``opinion_feed`` feeds Binance's word to the policy;
``roster`` and ``reshard`` decide which accounts this replica owns.
"""
