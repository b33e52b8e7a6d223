"""``margin-monitor replay``: historical prices through the same book, engine and policy, shown
as text or an SVG chart (the command line lives in ``monitor.cli.replay``).
"""
