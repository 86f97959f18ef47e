"""The results tree: load and check results_tree.yaml into typed objects, and store it.

`load_tree` refuses a bad file whole, listing every problem with its line (CONTRACT §2).
`store_tree` upserts a checked tree into the database, retiring ids the file dropped.

- specs: the typed tree (pydantic spec classes) and their field rules;
- yaml_lines: the file read into plain data with the line of every path;
- checker: the rules that span fields (cross-references), run on the raw data;
- problems: Problem, TreeError and pydantic's errors in words;
- loader: `load_tree`, which runs all of the above;
- store: `store_tree`;
- changes: what storing a new tree would change, refused unless the file says so.
"""

from tracker.tree.changes import TreeChangeRefused, TreeChanges
from tracker.tree.loader import load_tree
from tracker.tree.problems import Problem, TreeError
from tracker.tree.specs import (
    AgencySpec,
    CitySpec,
    FeedSpec,
    MeasureSpec,
    NodeSpec,
    OutputSpec,
    PlacesSpec,
    ResultSpec,
    RetiredSpec,
    Tree,
)
from tracker.tree.store import store_tree

__all__ = [
    "AgencySpec",
    "CitySpec",
    "FeedSpec",
    "MeasureSpec",
    "NodeSpec",
    "OutputSpec",
    "PlacesSpec",
    "Problem",
    "ResultSpec",
    "RetiredSpec",
    "Tree",
    "TreeChangeRefused",
    "TreeChanges",
    "TreeError",
    "load_tree",
    "store_tree",
]
