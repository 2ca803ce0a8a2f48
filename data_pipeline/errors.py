"""The one exception type for bad input, output or configuration.

The CLI (``python -m data_pipeline``, ``python -m data_pipeline.vq_train``) prints its message as one line and exits
2, without a traceback: the message must name the file, flag or setting at fault and say what to do. Anything else
that goes wrong is a bug and keeps its traceback. It is a ``ValueError`` so library callers that already catch
``ValueError`` keep working.
"""
from __future__ import annotations


class DataError(ValueError):
    pass
