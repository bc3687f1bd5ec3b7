"""Clear one-line errors for the ways a store can fail to open: a busy Lite file, an unreachable server, bad names."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from mmsearch.errors import CollectionNotFoundError, StoreError, StoreLockedError, StoreUnavailableError
from mmsearch.store import ProductStore

_OPEN_IN_CHILD = """
import json, sys
from mmsearch.store import ProductStore
try:
    ProductStore(sys.argv[1])
    print(json.dumps({"error": None}))
except Exception as err:
    print(json.dumps({"error": type(err).__name__, "message": str(err)}))
"""


def test_second_process_on_a_lite_db_gets_store_locked_error(tmp_path):
    db = tmp_path / "busy.db"
    with ProductStore(str(db)) as store:
        store.ensure_collection(encoder_id="enc", dim=4)
        child = subprocess.run(
            [sys.executable, "-c", _OPEN_IN_CHILD, str(db)], capture_output=True, text=True, timeout=120
        )
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result == {
        "error": "StoreLockedError",
        "message": (
            f"Milvus Lite database {db} is in use by another process (lock file {db / 'LOCK'}). Milvus Lite allows "
            "one process per database: stop the other process, or serve the database with "
            f"`milvus-lite server --data-dir {db} --host 127.0.0.1 --port 19530` and use server mode: "
            "MMSEARCH_MILVUS_URI=http://127.0.0.1:19530"
        ),
    }
    assert "Traceback" not in child.stderr, "a busy database must not print a traceback"


def test_lite_db_opens_again_once_the_other_process_has_closed_it(tmp_path):
    db = tmp_path / "reuse.db"
    with ProductStore(str(db)) as store:
        store.ensure_collection(encoder_id="enc", dim=4)
    child = subprocess.run(
        [sys.executable, "-c", _OPEN_IN_CHILD, str(db)], capture_output=True, text=True, timeout=120
    )
    assert json.loads(child.stdout.strip().splitlines()[-1]) == {"error": None}


def test_locked_error_is_a_store_error_for_the_api_mapping():
    assert issubclass(StoreLockedError, StoreError)
    assert StoreLockedError.http_status == 503


def _closed_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_raises_store_unavailable_naming_the_uri():
    uri = f"http://127.0.0.1:{_closed_loopback_port()}"
    with pytest.raises(StoreUnavailableError) as err:
        ProductStore(uri, timeout=5)
    host_port = uri.removeprefix("http://")
    assert str(err.value) == (
        f"cannot reach the Milvus server at {uri}: Fail connecting to server on {host_port}, illegal connection "
        "params or server unavailable. Start the server (see compose.yaml) or point MMSEARCH_MILVUS_URI / "
        "--milvus-uri at a reachable one."
    )


@pytest.mark.parametrize("name", ["", "1abc", "has-dash", "a b", "x" * 256, 'q"uote'])
def test_invalid_collection_name_is_refused(tmp_path, name):
    with pytest.raises(StoreError) as err:
        ProductStore(str(tmp_path / "x.db"), collection=name)
    assert str(err.value) == (
        f"collection name {name!r} is invalid: expected letters, digits and underscores, starting with a letter "
        "or underscore, at most 255 characters"
    )


def test_unknown_index_type_is_refused(tmp_path):
    with pytest.raises(ValueError) as err:
        ProductStore(str(tmp_path / "x.db"), index_type="DISKANN")
    assert (
        str(err.value)
        == "index_type 'DISKANN' is not supported; expected one of ['FLAT', 'HNSW', 'IVF_FLAT']"
    )


def test_lite_path_in_a_missing_directory_is_created(tmp_path):
    db = tmp_path / "nested" / "dir" / "store.db"
    with ProductStore(str(db)) as store:
        store.ensure_collection(encoder_id="enc", dim=4)
        assert store.info()["exists"] is True
    assert db.exists()


def test_engine_builds_the_store_from_settings_uri_and_collection(tmp_path):
    from mmsearch.config import Settings
    from mmsearch.engine import build_store

    settings = Settings(milvus_uri=str(tmp_path / "s.db"), collection="from_settings")
    with build_store(settings) as store:
        assert (store.uri, store.collection, store.is_server) == (
            str(tmp_path / "s.db"),
            "from_settings",
            False,
        )


def test_a_reader_never_creates_a_missing_lite_database(tmp_path):
    """Issue 14: a search from another directory must not leave an empty ./mmsearch.db behind."""
    db = tmp_path / "nowhere" / "missing.db"
    with pytest.raises(CollectionNotFoundError) as err:
        ProductStore(str(db), create=False)
    assert str(err.value).startswith(f"no Milvus Lite database at {db}; run `mmsearch index` first")
    assert not db.exists() and not db.parent.exists()
