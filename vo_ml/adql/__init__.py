"""ADQL 2.1 for the archive: translation to backend SQL, checked against the published TAP_SCHEMA.

Queries may call the standard ADQL functions and the service's own, declared in
:data:`FUNCTIONS` (``ml_distance`` for latent-space similarity); nothing else reaches the backend.
"""

from vo_ml.adql.errors import AdqlError
from vo_ml.adql.functions import OPTIONAL_FEATURES
from vo_ml.adql.latent import (
    FUNCTIONS,
    missing_distances_error,
    missing_model_error,
    missing_tags_error,
    reference_embeddings,
    tag_measure,
    unembedded_reference_error,
    unknown_reference_error,
)
from vo_ml.adql.model import (
    MEASURES,
    UPLOAD_SCHEMA,
    Encoding,
    OutputColumn,
    Reference,
    Translation,
    upload_view,
)
from vo_ml.adql.translation import check, translate

__all__ = [
    "FUNCTIONS",
    "MEASURES",
    "OPTIONAL_FEATURES",
    "UPLOAD_SCHEMA",
    "upload_view",
    "AdqlError",
    "Encoding",
    "OutputColumn",
    "Reference",
    "Translation",
    "check",
    "missing_distances_error",
    "missing_model_error",
    "missing_tags_error",
    "reference_embeddings",
    "tag_measure",
    "translate",
    "unembedded_reference_error",
    "unknown_reference_error",
]
