"""config.yaml as one typed, validated object (``model``), its one-line errors (``errors``), the
notes ``check`` prints (``notes``), durations (``duration``) and shards (``shard``).

The bottom layer: imports nothing else of monitor/.
"""
