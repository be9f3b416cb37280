"""TensorFlow and Keras, imported here only, once, without their start-up banners.

TensorFlow writes its C++ log lines (the absl "before InitializeLog" notice, oneDNN's note) to
the process's stderr while it is imported, twice, whatever ``TF_CPP_MIN_LOG_LEVEL`` says, as
absl logs everything before it is initialised. So the import runs with file descriptor 2 sent
to a temporary file, and whatever TensorFlow wrote there that is not one of those banners is
written back to stderr afterwards. ``TF_CPP_MIN_LOG_LEVEL`` (unless set) keeps its later INFO
and WARNING lines out, and its Python loggers (``tensorflow``, absl's) report errors only.
Every module of the package that needs TensorFlow or Keras takes them from here.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from types import ModuleType

__all__ = ["keras", "tf"]

#: The lines TensorFlow writes on import that say nothing about this run.
BANNERS = re.compile(r"All log messages before absl::InitializeLog\(\) is called|"
                     r"oneDNN custom operations are on|"
                     r"This TensorFlow binary is optimized|"
                     r"To enable the following instructions:.* in other operations, rebuild")


def _import_quietly() -> tuple[ModuleType, ModuleType]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to keep clean
        return _import()
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            modules = _import()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            written = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in written if not BANNERS.search(line)))
    return modules


def _import() -> tuple[ModuleType, ModuleType]:
    import keras
    import tensorflow
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return tensorflow, keras


tf, keras = _import_quietly()
