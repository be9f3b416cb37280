"""vo_ml: machine-learning embeddings of archive spectra, served through IVOA TAP.

The packages follow the data flow, and each imports only those before it, in this order
(``tests/test_layers.py`` reads it here)::

    spectra -> ml -> archive -> adql -> service -> pipeline -> cli

``spectra`` reads, grids and normalises spectra; ``ml`` trains models and embeds with Dask;
``archive`` holds the TAP tables and TAP_SCHEMA; ``adql`` translates ADQL to SQL; ``service`` is
the Flask application; ``pipeline`` runs the steps that the command line, ``cli``, offers.
Base modules import no other part of vo_ml, and any module may import them (as it may this
package's ``__version__``)::

    files, progress, resources

No module imports one that imports it back, however indirectly, even inside a function.
"""

__version__ = "0.1.0"
