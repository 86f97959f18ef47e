"""The fixed vocabularies: the words the tree, the write path, the models and the API share.

Each is a tuple (for checks and messages, in this order) and, where a pydantic model
needs it, a `Literal` built from it, so a word is added or renamed in one place.
"""

from typing import Literal

WORK_STATUSES = ("planned", "in_progress", "complete", "cancelled")
WorkStatus = Literal[WORK_STATUSES]

# What a batch of rows can come through; the audit trail also records the CLI.
BATCH_CHANNELS = ("api", "csv", "web", "feed", "demo")
BatchChannel = Literal[BATCH_CHANNELS]
AUDIT_CHANNELS = (*BATCH_CHANNELS, "cli")
AuditChannel = Literal[AUDIT_CHANNELS]

MEASURE_KINDS = ("cumulative", "level", "flow")
MeasureKind = Literal[MEASURE_KINDS]
AGGREGATES = ("sum", "mean", "min", "max")
Aggregate = Literal[AGGREGATES]
FREQUENCIES = ("weekly", "monthly", "quarterly", "yearly")
Frequency = Literal[FREQUENCIES]
