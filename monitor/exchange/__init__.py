"""The Binance client and nothing else: REST through python-binance, the market streams, the
user-data stream over the WebSocket API, the Risk Data Stream, and the typed parsing of their frames.

Translates the wire into values (``parse``, ``frames``, ``events``); one reconnect shape
(``supervisor``); failures sorted into retryable and fatal (``errors``, ``diagnose``). It never
imports the simulator (contract ``simulator-apart``).
"""
