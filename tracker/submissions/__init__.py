"""The one write path: validate a batch, authorise it, store revisions, record the batch.

API calls, CSV uploads, web entries, feed runs and the demo loader all call these
functions, so validation, authorisation, revisions and the trail exist once. Either way
(all or nothing, or partial for feeds: see `batches`) the rows that are stored are
written in the caller's one transaction.

- batches: errors, outcome, idempotency, the batch row and the agency's write lock;
- fields: checks of single fields shared by both kinds of row;
- observations: `submit_observations`, its row checks and storage;
- works: `submit_works`, its row checks and storage;
- csv_input: CSV bodies read into rows.
"""

from tracker.submissions.batches import Idempotency, Outcome, RowError, SubmissionRejected
from tracker.submissions.csv_input import InputRows, read_observations_csv, read_works_csv
from tracker.submissions.observations import submit_observations
from tracker.submissions.works import WORK_DATES, submit_works

__all__ = [
    "WORK_DATES",
    "Idempotency",
    "InputRows",
    "Outcome",
    "RowError",
    "SubmissionRejected",
    "read_observations_csv",
    "read_works_csv",
    "submit_observations",
    "submit_works",
]
