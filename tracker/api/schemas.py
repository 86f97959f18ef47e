"""Request and answer models of the /api/v1 routes; the OpenAPI document is built from them."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Query models refuse parameters they do not know, naming them."""

    model_config = ConfigDict(extra="forbid")


class PlaceProperties(BaseModel):
    id: str
    name: str
    level: Literal["city", "area", "neighbourhood"]
    parent: str | None = Field(description="id of the parent place; null for the city")


class PlaceFeature(BaseModel):
    type: Literal["Feature"] = "Feature"
    id: str
    properties: PlaceProperties
    geometry: dict[str, Any] = Field(
        description="GeoJSON Polygon or MultiPolygon (WGS84), simplified to about 10 m"
    )


class PlaceCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[PlaceFeature]


class StreetsQuery(Strict):
    q: str = Field(
        max_length=200,
        description="Words that must each start a word of the street's name; case and "
        "macrons are ignored",
    )


class StreetMatch(BaseModel):
    id: str
    name: str
    places: list[str] = Field(description="ids of the neighbourhoods the street lies in")
