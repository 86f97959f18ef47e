"""GeoJSON: a FeatureCollection; each feature's properties are the fields (RFC 7946)."""

from typing import Any

from importers import Importer, ParseError, SourceRow, register
from importers.json import load_json


@register
class GeoJsonImporter(Importer):
    """Features numbered from 0 in file order; geometry kept apart from the fields."""

    format = "geojson"
    geometry = True

    def parse(self, body: bytes, options: dict[str, Any] | None = None) -> list[SourceRow]:
        data = load_json(body)
        if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
            raise ParseError("expected a GeoJSON FeatureCollection")
        features = data.get("features")
        if not isinstance(features, list):
            raise ParseError("the FeatureCollection has no list of features")
        return [feature_row(number, feature) for number, feature in enumerate(features)]


def feature_row(number: int, feature: Any) -> SourceRow:
    """A row from one feature; a malformed feature is kept with a problem."""
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        return SourceRow(number, {}, problem="not a GeoJSON Feature")
    properties = feature.get("properties")
    if properties is None:
        properties = {}
    geometry = feature.get("geometry")
    if not isinstance(properties, dict):
        return SourceRow(number, {}, problem="the feature's properties are not an object")
    if geometry is not None and not isinstance(geometry, dict):
        return SourceRow(number, properties, problem="the feature's geometry is not an object")
    # Many publishers put the record id in the feature's own "id" member rather than in
    # its properties; a property of the same name wins.
    fields = {"id": feature["id"], **properties} if "id" in feature else properties
    return SourceRow(number, fields, geometry=geometry)
