"""The ten source adapters (``registry.ADAPTERS``), each in its own module, and the rules they apply (``settings``).

Importing this package imports nothing else: the adapters load polars and pyarrow, the settings do not, so a
command's ``--help`` lists every rule without loading a data library.
"""
