"""ListItems pages: the msgspec fast path gives what the lenient parser gives.

``parse_list_page`` decodes a well-formed page straight into ``Item`` structs and falls
back to a lenient dict-walking parser when the page does not fit the schema. Both must
agree on every well-formed page, and the fallback must keep its documented rules.
"""

from __future__ import annotations

import datetime as dt
import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from msd_async import Item, ListPage
from msd_async.errors import ProtocolError
from msd_async.protocol import _parse_list_page_leniently, parse_list_page

names = st.text(min_size=1, max_size=20)
objects = st.fixed_dictionaries(
    {"Name": names, "Type": st.just("OBJECT")},
    optional={
        "ETag": st.text(max_size=40),
        "LastModified": st.floats(0, 4e9) | st.integers(0, 4_000_000_000),
        "ContentType": st.text(max_size=30),
        "ContentLength": st.integers(0, 2**53),
        "Unmodelled": st.integers(),
    },
)
folders = st.fixed_dictionaries({"Name": names, "Type": st.just("FOLDER")})
pages = st.fixed_dictionaries(
    {"Items": st.lists(objects | folders, max_size=30)},
    optional={"NextToken": st.text(max_size=30)},
)


@given(pages)
def test_fast_path_equals_lenient_parser_on_well_formed_pages(page: dict[str, object]) -> None:
    body = json.dumps(page).encode()
    fast = parse_list_page(body)
    assert fast == _parse_list_page_leniently(body)
    assert isinstance(fast, ListPage)
    assert all(type(item) is Item for item in fast.items)


def test_item_fields_are_typed() -> None:
    body = (
        b'{"Items": [{"Name": "a.mp4", "Type": "OBJECT", "ETag": "e1", "LastModified": '
        b'1563571859.379, "ContentType": "video/mp4", "ContentLength": 12}, '
        b'{"Name": "f", "Type": "FOLDER"}], "NextToken": ""}'
    )
    page = parse_list_page(body)
    assert page.next_token is None  # an empty token means the last page
    obj, folder = page.items
    assert obj == Item(
        name="a.mp4",
        type="OBJECT",
        etag="e1",
        last_modified=dt.datetime(2019, 7, 19, 21, 30, 59, 379000, tzinfo=dt.UTC),
        content_type="video/mp4",
        content_length=12,
    )
    assert folder == Item(name="f", type="FOLDER")
    assert hash(folder) == hash(Item(name="f", type="FOLDER"))
    with pytest.raises(AttributeError):
        folder.name = "g"  # type: ignore[misc]
    assert msgspec.structs.replace(folder, name="g").name == "g"


@pytest.mark.parametrize(
    ("raw_item", "expected"),
    [
        # Wrong-typed fields become None; an unknown Type is an object.
        (
            {"Name": "a", "Type": "SYMLINK", "ETag": 5, "ContentLength": True},
            Item(name="a", type="OBJECT"),
        ),
        ({"Name": "a", "Type": "OBJECT", "LastModified": "yesterday"}, Item("a", "OBJECT")),
        ({"Name": "a", "Type": "OBJECT", "LastModified": 1e300}, Item("a", "OBJECT")),
        ({"Name": "a"}, Item("a", "OBJECT")),
    ],
)
def test_a_page_off_schema_falls_back_to_the_lenient_rules(
    raw_item: dict[str, object], expected: Item
) -> None:
    body = json.dumps({"Items": [raw_item]}).encode()
    assert parse_list_page(body) == ListPage((expected,), None)


@pytest.mark.parametrize("entry", ["junk", {"Type": "FOLDER"}, {"Name": 5, "Type": "OBJECT"}])
def test_an_entry_without_a_name_raises_protocol_error(entry: object) -> None:
    # Skipped, it would make the listing silently incomplete: a download sync with
    # --delete would then delete the local copy of an object the container still holds.
    body = json.dumps({"Items": [{"Name": "a", "Type": "OBJECT"}, entry]}).encode()
    with pytest.raises(ProtocolError, match="without a Name"):
        parse_list_page(body)


@pytest.mark.parametrize("body", [b"{}", b'{"Items": []}', b'{"Items": [], "NextToken": ""}'])
def test_a_page_without_items_is_an_empty_last_page(body: bytes) -> None:
    assert parse_list_page(body) == ListPage((), None)


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b"<html>Welcome</html>", b'"x"'])
def test_a_body_that_is_not_a_json_object_raises_protocol_error(body: bytes) -> None:
    # A web server or a captive portal answering 200 to anything: not an empty folder.
    with pytest.raises(ProtocolError, match="not a JSON object"):
        parse_list_page(body)


@pytest.mark.parametrize("body", [b'{"Items": null}', b'{"Items": {"Name": "a"}}'])
def test_items_that_are_not_a_list_raise_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError, match="no Items list"):
        parse_list_page(body)
