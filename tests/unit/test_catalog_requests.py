"""The catalog API's request bodies: money is integer minor units, and unknown fields are refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from catalog_service.api import NewProductIn, ProductIn, ProductPatchIn
from catalog_service.domain import Details, Patch

KETTLE: dict[str, Any] = {"name": "Kettle", "category": "kitchen", "price": 2999, "currency": "USD"}


def error_messages(model: type[Any], body: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    return " | ".join(e["msg"] for e in caught.value.errors())


def test_a_full_body_becomes_the_product_details() -> None:
    body = ProductIn.model_validate(KETTLE | {"name": "  Kettle "})
    assert body.details() == Details(name="Kettle", category="kitchen", price=2999, currency="USD")


@pytest.mark.parametrize("model", [ProductIn, ProductPatchIn])
@pytest.mark.parametrize("price", [29.99, 2999.0])
def test_a_float_price_is_refused_with_a_message_that_says_why(
    model: type[Any], price: float
) -> None:
    assert "not a float" in error_messages(model, KETTLE | {"price": price})


@pytest.mark.parametrize("price", ["2999", True, -1, 10**13])
def test_a_price_that_is_not_a_sane_integer_is_refused(price: object) -> None:
    with pytest.raises(ValidationError) as caught:
        ProductIn.model_validate(KETTLE | {"price": price})
    assert [e["loc"] for e in caught.value.errors()] == [("price",)]


@pytest.mark.parametrize("currency", ["usd", "US", "DOLLAR", ""])
def test_a_currency_that_is_not_an_iso_code_is_refused(currency: str) -> None:
    with pytest.raises(ValidationError):
        ProductIn.model_validate(KETTLE | {"currency": currency})


def test_unknown_fields_are_refused() -> None:
    assert "Extra inputs" in error_messages(ProductIn, KETTLE | {"colour": "red"})


def test_a_put_body_may_not_carry_a_sku_but_a_new_product_must() -> None:
    with pytest.raises(ValidationError):
        ProductIn.model_validate(KETTLE | {"sku": "KET-1"})
    with pytest.raises(ValidationError):
        NewProductIn.model_validate(KETTLE)
    assert NewProductIn.model_validate(KETTLE | {"sku": "KET-1"}).sku == "KET-1"


def test_a_blank_name_is_refused() -> None:
    with pytest.raises(ValidationError):
        ProductIn.model_validate(KETTLE | {"name": "   "})


def test_a_patch_keeps_what_it_omits_and_refuses_explicit_nulls() -> None:
    assert ProductPatchIn.model_validate({"price": 0}).patch() == Patch(price=0)
    assert "cannot be null" in error_messages(ProductPatchIn, {"description": None})
