"""config.yaml as one typed, validated object (``model``: frozen dataclasses), the validator that
builds it (``schema``), what single values must look like (``checks``), its one-line errors
(``errors``), secrets that never print (``secret``), the notes ``check`` prints (``notes``),
durations (``duration``) and shards (``shard``).

The bottom layer: imports nothing else of monitor/.
"""
