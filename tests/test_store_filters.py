"""ProductFilter validation and expression building (no Milvus here; see test_store.py for real queries)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mmsearch.errors import InvalidFilterError
from mmsearch.store.filters import ProductFilter, format_number, ids_expr, quote_string


def test_quote_string_escapes_backslash_quote_and_line_breaks():
    assert quote_string('a"b\\c\nd\re\tf') == '"a\\"b\\\\c\\nd\\re\\tf"'


def test_quote_string_keeps_single_quotes_and_unicode_verbatim():
    assert quote_string("it's é 漢字 🎉") == '"it\'s é 漢字 🎉"'


def test_format_number_never_uses_an_exponent():
    assert format_number(1e-7) == "0.0000001"
    assert format_number(1e9) == "1000000000.0"
    assert format_number(19.99) == "19.99"


def test_ids_expr_escapes_each_id():
    assert ids_expr(['a"', "b\\"]) == 'id in ["a\\"", "b\\\\"]'


def test_empty_filter_gives_empty_expression():
    f = ProductFilter()
    assert f.is_empty
    assert f.to_expr() == ""


def test_all_conditions_are_anded_in_a_fixed_order():
    f = ProductFilter(category="Electronics", min_price=10, max_price=20.5, min_rating=4, parent_asin="B01")
    assert f.to_expr() == (
        '(main_category == "Electronics") and (parent_asin == "B01") and (price >= 10.0) '
        "and (price >= 0 and price <= 20.5) and (average_rating >= 4.0)"
    )


def test_hostile_category_stays_inside_one_string_literal():
    f = ProductFilter(category='" or 1==1 or main_category == "')
    assert f.to_expr() == '(main_category == "\\" or 1==1 or main_category == \\"")'


def test_numeric_strings_are_parsed_as_numbers():
    assert ProductFilter(min_price="12.5").min_price == 12.5


def test_unknown_field_is_refused_with_the_allowed_list():
    with pytest.raises(InvalidFilterError) as err:
        ProductFilter(colour="red")
    assert str(err.value) == (
        "unknown filter field 'colour'; allowed: category, min_price, max_price, min_rating, parent_asin, ids"
    )


def test_min_price_above_max_price_is_refused():
    with pytest.raises(InvalidFilterError) as err:
        ProductFilter(min_price=30, max_price=10)
    assert str(err.value) == "invalid filter: min_price 30.0 is greater than max_price 10.0"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "inf"])
def test_non_finite_price_is_refused(value):
    with pytest.raises(InvalidFilterError) as err:
        ProductFilter(min_price=value)
    assert str(err.value) == f"invalid filter min_price={value!r}: Input should be a finite number"


def test_text_price_is_refused_naming_the_value():
    with pytest.raises(InvalidFilterError) as err:
        ProductFilter(max_price="cheap")
    assert str(err.value) == (
        "invalid filter max_price='cheap': Input should be a valid number, unable to parse string as a number"
    )


def test_boolean_price_is_refused():
    with pytest.raises(InvalidFilterError) as err:
        ProductFilter(min_price=True)
    assert str(err.value) == "invalid filter min_price=True: expected a number, got a boolean"


def test_negative_price_is_refused():
    with pytest.raises(InvalidFilterError) as err:
        ProductFilter(min_price=-1)
    assert str(err.value) == "invalid filter min_price=-1: Input should be greater than or equal to 0"


def test_rating_above_five_is_refused():
    with pytest.raises(InvalidFilterError) as err:
        ProductFilter(min_rating=6)
    assert str(err.value) == "invalid filter min_rating=6: Input should be less than or equal to 5"


def test_non_string_category_is_refused():
    with pytest.raises(InvalidFilterError) as err:
        ProductFilter(category=5)
    assert str(err.value) == "invalid filter category=5: Input should be a valid string"


def test_control_character_in_category_is_refused():
    with pytest.raises(InvalidFilterError) as err:
        ProductFilter(category="a\x00b")
    assert (
        str(err.value) == "invalid filter category='a\\x00b': category contains the control character '\\x00'"
    )


def test_empty_category_is_refused():
    with pytest.raises(InvalidFilterError) as err:
        ProductFilter(category="")
    assert str(err.value) == "invalid filter category='': category must not be empty"


def test_filter_is_immutable():
    f = ProductFilter(category="A")
    with pytest.raises(ValidationError, match="frozen"):
        f.category = "B"
