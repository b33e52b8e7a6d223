"""margin-monitor: live Binance margin level and liquidation-distance monitor."""

__version__ = "0.1.0"
