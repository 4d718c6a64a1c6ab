"""Building datasets: the built-in default dataset, byte-level variants, and the FineWeb
download. A run imports `default` by name only when it uses the default dataset, and the
bundler embeds it only then; `download` and the converters never ship.
"""
