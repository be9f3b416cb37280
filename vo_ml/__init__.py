"""vo_ml: machine-learning embeddings of archive spectra, served through IVOA TAP.

The packages follow the data flow, and each imports only those before it:
``spectra`` (read, grid, normalise) -> ``ml`` (models, training, Dask embedding)
-> ``archive`` (TAP tables, TAP_SCHEMA) -> ``adql`` (ADQL to SQL) -> ``service`` (Flask).
"""

__version__ = "0.1.0"
