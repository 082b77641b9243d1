"""Migration metadata files, their discovery, and the Pinball -> Airflow handover."""

from __future__ import annotations

import json
import os
import pickle
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from token_fetcher.handovers import Handover, handover
from token_fetcher.metadata_discovery import Discovery, discover_metadata
from token_fetcher.migration import (
    MetadataError,
    MigrationMetadata,
    parse_metadata,
    read_metadata,
    write_metadata,
)

DAY = 86_400
WEEK = 7 * DAY
NEW_YEAR_2020 = datetime(2020, 1, 1, tzinfo=UTC)
NEW_YEAR_2020_EPOCH = 1_577_836_800
CANONICAL = (
    '{"cluster_name": "core001", "workflow_name": "test_workflow", '
    '"migration_date": "2020-01-01 00:00:00"}'
)
PATH = "meta/core001/test_workflow.json"


def doc(migration_date: object = "2020-01-01 00:00:00", **fields: object) -> str:
    data = {"cluster_name": "core001", "workflow_name": "test_workflow"}
    data["migration_date"] = migration_date
    data.update(fields)
    return json.dumps(data)


def error_of(text: str, path: str = PATH) -> str:
    with pytest.raises(MetadataError) as caught:
        parse_metadata(text, path)
    return str(caught.value)


# --- parsing: accepted forms ------------------------------------------------------


def test_parse_canonical_file() -> None:
    metadata = parse_metadata(CANONICAL, PATH)
    assert metadata.cluster_name == "core001"
    assert metadata.workflow_name == "test_workflow"
    assert metadata.migration_date == NEW_YEAR_2020
    assert metadata.migration_date.tzinfo is UTC
    assert metadata.migration_epoch == 1_577_836_800
    assert metadata.path == PATH


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("2020-01-01 00:00:00", 1_577_836_800),  # canonical, UTC
        ("2020-01-01T00:00:00", 1_577_836_800),  # ISO, naive means UTC
        ("2020-01-01T00:00:00Z", 1_577_836_800),
        ("2020-01-01t00:00:00z", 1_577_836_800),  # RFC 3339 allows lower case
        ("2020-01-01 00:00:00Z", 1_577_836_800),
        ("2020-01-01T00:00:00+00:00", 1_577_836_800),
        ("2020-01-01T00:00:00-00:00", 1_577_836_800),
        ("2020-01-01T05:30:00+05:30", 1_577_836_800),  # offsets convert to UTC
        ("2020-01-01T05:30:00+0530", 1_577_836_800),
        ("2019-12-31T19:00:00-05:00", 1_577_836_800),
        ("2020-01-01T01:00:00+02:00", 1_577_833_200),  # 2019-12-31 23:00 UTC
        ("2020-01-01T00:00:00.5", 1_577_836_800),  # fractions are dropped (floor)
        ("2020-01-01 00:00:00.999999", 1_577_836_800),
        ("2020-01-01T00:00:00.123456789Z", 1_577_836_800),
        ("2020-01-01T05:30:00.75+05:30", 1_577_836_800),
        ("2020-01-01T00:00:01.000", 1_577_836_801),
        ("1969-12-31 23:59:59.5", -1),  # floor, not towards zero
        ("0001-01-01 00:00:00", -62_135_596_800),
        ("9999-12-31T23:59:59Z", 253_402_300_799),
    ],
)
def test_parse_date_forms(text: str, epoch: int) -> None:
    metadata = parse_metadata(doc(text))
    assert metadata.migration_epoch == epoch
    assert metadata.migration_date.utcoffset() == timedelta(0)
    assert metadata.migration_date.microsecond == 0


def test_unknown_keys_are_ignored() -> None:
    metadata = parse_metadata(doc(owner="data-eng", version=2, nested={"a": [1]}))
    assert metadata == MigrationMetadata("core001", "test_workflow", NEW_YEAR_2020)


def test_names_are_kept_as_written() -> None:
    metadata = parse_metadata(doc(cluster_name=" core 001 ", workflow_name="wf.daily-v2_é"))
    assert metadata.cluster_name == " core 001 "
    assert metadata.workflow_name == "wf.daily-v2_é"


def test_to_json_is_canonical() -> None:
    metadata = parse_metadata(doc("2020-01-01T05:30:00.75+05:30"))
    assert metadata.to_json() == CANONICAL


def test_to_json_pads_early_years() -> None:
    metadata = MigrationMetadata("c", "w", datetime(999, 2, 3, 4, 5, 6, tzinfo=UTC))
    assert metadata.to_json() == (
        '{"cluster_name": "c", "workflow_name": "w", "migration_date": "0999-02-03 04:05:06"}'
    )


def test_to_json_escapes_non_ascii() -> None:
    metadata = MigrationMetadata("c", "wf\u00e9", NEW_YEAR_2020)
    assert metadata.to_json() == (
        '{"cluster_name": "c", "workflow_name": "wf\\u00e9", '
        '"migration_date": "2020-01-01 00:00:00"}'
    )
    assert parse_metadata(metadata.to_json()).workflow_name == "wf\u00e9"


# --- the dataclass itself ---------------------------------------------------------


def test_metadata_normalises_to_utc_seconds() -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    metadata = MigrationMetadata("c", "w", datetime(2020, 1, 1, 5, 30, 0, 999_999, tzinfo=india))
    assert metadata.migration_date == datetime(2020, 1, 1, tzinfo=UTC)
    assert metadata.migration_date.tzinfo is UTC
    assert metadata.migration_date.microsecond == 0
    assert metadata.migration_epoch == 1_577_836_800


def test_metadata_refuses_naive_dates() -> None:
    with pytest.raises(ValueError, match="migration_date must be timezone-aware"):
        MigrationMetadata("c", "w", datetime(2020, 1, 1))


def test_metadata_refuses_bad_names() -> None:
    with pytest.raises(ValueError, match="cluster_name 'a/b' contains '/'"):
        MigrationMetadata("a/b", "w", NEW_YEAR_2020)
    with pytest.raises(TypeError, match="workflow_name must be a str, got int"):
        MigrationMetadata("c", 5, NEW_YEAR_2020)  # type: ignore[arg-type]


def test_metadata_equality_ignores_path() -> None:
    a = MigrationMetadata("c", "w", NEW_YEAR_2020, path="one.json")
    b = MigrationMetadata("c", "w", NEW_YEAR_2020, path="two.json")
    assert a == b
    assert hash(a) == hash(b)
    assert a != MigrationMetadata("c", "w2", NEW_YEAR_2020)


def test_metadata_is_frozen() -> None:
    metadata = MigrationMetadata("c", "w", NEW_YEAR_2020)
    with pytest.raises(AttributeError):
        metadata.cluster_name = "other"  # type: ignore[misc]


# --- parsing: errors --------------------------------------------------------------


def test_error_is_a_value_error_naming_the_file() -> None:
    with pytest.raises(ValueError) as caught:
        parse_metadata("[]", PATH)
    assert isinstance(caught.value, MetadataError)
    assert caught.value.path == PATH
    assert caught.value.problem.startswith("expected a JSON object")
    assert str(caught.value).startswith(f"{PATH}: ")


def test_error_without_a_path_is_just_the_problem() -> None:
    with pytest.raises(MetadataError) as caught:
        parse_metadata("{}")
    assert str(caught.value) == "missing fields: cluster_name, workflow_name, migration_date"


def test_error_survives_pickling() -> None:
    error = MetadataError("bad date", "x/y.json")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.problem, str(copy)) == ("x/y.json", "bad date", "x/y.json: bad date")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"cluster_name": "a",\n "workflow_name": }', "invalid JSON at line 2, column 19"),
        ("", "invalid JSON at line 1, column 1: Expecting value"),
        ('{"cluster_name": "core001"', "invalid JSON at line 1, column 27"),
        (CANONICAL + "x", "invalid JSON at line 1, column 103: Extra data"),
    ],
)
def test_invalid_json(text: str, expected: str) -> None:
    assert error_of(text).startswith(f"{PATH}: {expected}")


@pytest.mark.parametrize(
    ("text", "kind"),
    [("[]", "an array"), ('"x"', "a string"), ("null", "null"), ("3", "a number")],
)
def test_not_an_object(text: str, kind: str) -> None:
    assert error_of(text) == (
        f"{PATH}: expected a JSON object with cluster_name, workflow_name, migration_date, "
        f"got {kind}"
    )


def test_missing_fields_are_all_named() -> None:
    assert error_of("{}") == f"{PATH}: missing fields: cluster_name, workflow_name, migration_date"
    assert error_of('{"workflow_name": "w"}') == (
        f"{PATH}: missing fields: cluster_name, migration_date"
    )
    assert error_of('{"cluster_name": "c", "workflow_name": "w"}') == (
        f"{PATH}: missing field: migration_date"
    )


def test_wrong_types() -> None:
    text = '{"cluster_name": 5, "workflow_name": null, "migration_date": 1577836800}'
    assert error_of(text) == (
        f"{PATH}: cluster_name must be a string, got a number (5); "
        "workflow_name must be a string, got null; "
        "migration_date must be a string, got a number (1577836800)"
    )
    assert error_of(doc(workflow_name=["a"])) == (
        f'{PATH}: workflow_name must be a string, got an array (["a"])'
    )
    assert error_of(doc(True)) == f"{PATH}: migration_date must be a string, got a boolean (true)"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"cluster_name": ""}, "cluster_name is empty"),
        ({"workflow_name": ""}, "workflow_name is empty"),
        ({"workflow_name": "   "}, "workflow_name '   ' is only whitespace"),
        ({"cluster_name": "\t\n"}, "cluster_name '\\t\\n' is only whitespace"),
        ({"workflow_name": "a/b"}, "workflow_name 'a/b' contains '/'"),
        ({"cluster_name": "/core001"}, "cluster_name '/core001' contains '/'"),
        ({"workflow_name": "a\0b"}, "workflow_name 'a\\x00b' contains a NUL character"),
        ({"cluster_name": ".."}, "cluster_name '..' is not a usable name"),
        ({"workflow_name": "."}, "workflow_name '.' is not a usable name"),
    ],
)
def test_bad_names(fields: dict[str, str], problem: str) -> None:
    assert error_of(doc(**fields)) == f"{PATH}: {problem}"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "yesterday",
        "2020-01-01",  # date only
        "2020-01-01 00:00",  # no seconds
        "2020-01-01T00",
        "20200101T000000Z",  # basic format
        "2020-W01-1 00:00:00",
        " 2020-01-01 00:00:00",
        "2020-01-01 00:00:00 ",
        "2020-01-01  00:00:00",
        "2020/01/01 00:00:00",
        "2020-01-01 00:00:00.",
        "2020-01-01 00:00:00.1234567890",
        "2020-01-01 00:00:00 UTC",
        "2020-01-01 00:00:00+5",
        "2020-01-01T00:00:00+05:30:00",
        "\u0662020-01-01 00:00:00",  # a non-ASCII digit
    ],
)
def test_malformed_dates(value: str) -> None:
    assert error_of(doc(value)) == (
        f"{PATH}: migration_date {value!r} is not a date and time: expected "
        "'YYYY-MM-DD HH:MM:SS' (UTC) or ISO 8601 such as '2020-01-01T00:00:00Z', "
        "'2020-01-01T05:30:00+05:30' or '2020-01-01T00:00:00.5'"
    )


@pytest.mark.parametrize(
    "value",
    [
        "2020-13-01 00:00:00",
        "2020-02-30 00:00:00",
        "2019-02-29 00:00:00",
        "2020-01-01 24:00:00",
        "2020-01-01 00:60:00",
        "2016-12-31 23:59:60",  # leap seconds do not exist for datetime
        "0000-01-01 00:00:00",
        "2020-01-01T00:00:00+24:00",
        "2020-01-01T00:00:00+05:60",
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:00:00-01:00",  # after year 9999 in UTC
    ],
)
def test_out_of_range_dates(value: str) -> None:
    assert error_of(doc(value)) == (
        f"{PATH}: migration_date {value!r} is out of range (no such date, time or UTC offset)"
    )


def test_duplicate_keys_are_refused() -> None:
    text = CANONICAL[:-1] + ', "migration_date": "2021-01-01 00:00:00"}'
    assert error_of(text) == f"{PATH}: invalid metadata: duplicate key 'migration_date'"


def test_all_problems_are_reported_together() -> None:
    text = '{"cluster_name": "", "migration_date": "soon"}'
    message = error_of(text)
    assert message.startswith(f"{PATH}: missing field: workflow_name; cluster_name is empty; ")
    assert "migration_date 'soon' is not a date and time" in message


# --- reading files ----------------------------------------------------------------


def test_read_metadata(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text(CANONICAL + "\n", encoding="utf-8")
    metadata = read_metadata(path)
    assert metadata == MigrationMetadata("core001", "test_workflow", NEW_YEAR_2020)
    assert metadata.path == str(path)


def test_read_metadata_accepts_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_bytes(b"\xef\xbb\xbf" + CANONICAL.encode())
    assert read_metadata(str(path)).workflow_name == "test_workflow"


def test_read_errors_name_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"cluster_name": "c"}', encoding="utf-8")
    with pytest.raises(MetadataError) as caught:
        read_metadata(path)
    assert str(caught.value) == f"{path}: missing fields: workflow_name, migration_date"
    assert caught.value.path == str(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(MetadataError) as caught:
        read_metadata(path)
    assert str(caught.value) == f"{path}: cannot read file: No such file or directory"


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(MetadataError) as caught:
        read_metadata(tmp_path)
    assert str(caught.value) == f"{tmp_path}: cannot read file: Is a directory"


def test_path_through_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file.json" / "x.json"
    path.parent.write_text(CANONICAL, encoding="utf-8")
    with pytest.raises(MetadataError) as caught:
        read_metadata(path)
    assert str(caught.value) == f"{path}: cannot read file: Not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.json"
    path.write_text(CANONICAL, encoding="utf-8")
    path.chmod(0)
    with pytest.raises(MetadataError, match="cannot read file: Permission denied"):
        read_metadata(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(CANONICAL.replace("test_workflow", "caf\xe9").encode("latin-1"))
    with pytest.raises(MetadataError) as caught:
        read_metadata(path)
    assert str(caught.value) == f"{path}: not UTF-8 text (byte 49): invalid continuation byte"


# --- discovery --------------------------------------------------------------------


def put(root: Path, relative: str, text: str) -> str:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_discovery_of_a_nested_tree(tmp_path: Path) -> None:
    a = put(tmp_path, "core001/a.json", doc(workflow_name="wf_a"))
    b = put(tmp_path, "core001/sub/deeper/b.json", doc(workflow_name="wf_b"))
    c = put(tmp_path, "core002/c.json", doc(cluster_name="core002", workflow_name="wf_a"))
    top = put(tmp_path, "top.json", doc(cluster_name="aaa", workflow_name="zzz"))
    broken = put(tmp_path, "core001/broken.json", '{"cluster_name": ')
    # Not metadata files: hidden files and folders, other extensions, other case.
    put(tmp_path, ".hidden/x.json", doc(workflow_name="hidden_dir"))
    put(tmp_path, "core001/.swap.json", doc(workflow_name="hidden_file"))
    put(tmp_path, "core001/sub/.git/y.json", doc(workflow_name="git"))
    put(tmp_path, "core001/readme.txt", "not json")
    put(tmp_path, "core001/upper.JSON", doc(workflow_name="upper"))
    put(tmp_path, "core001/a.json.bak", doc(workflow_name="backup"))

    found = discover_metadata(tmp_path)

    assert [(m.cluster_name, m.workflow_name, m.path) for m in found.entries] == [
        ("aaa", "zzz", top),
        ("core001", "wf_a", a),
        ("core001", "wf_b", b),
        ("core002", "wf_a", c),
    ]
    assert [str(error) for error in found.errors] == [
        f"{broken}: invalid JSON at line 1, column 18: Expecting value"
    ]
    assert found.duplicates == ()


def test_discovery_reports_duplicates_and_keeps_the_first_path(tmp_path: Path) -> None:
    same = doc(cluster_name="core002", workflow_name="wf_dup")
    first = put(tmp_path, "core002/a_first.json", same)
    second = put(tmp_path, "core002/b_second.json", same.replace("2020", "2021"))
    third = put(tmp_path, "zzz/third.json", same)
    other = put(tmp_path, "core002/other.json", doc(cluster_name="core002", workflow_name="x"))

    found = discover_metadata(str(tmp_path))

    assert [(m.workflow_name, m.path) for m in found.entries] == [("wf_dup", first), ("x", other)]
    assert found.entries[0].migration_date == NEW_YEAR_2020  # the first file's date
    assert found.duplicates == (("core002", "wf_dup", (first, second, third)),)
    assert found.errors == ()


def test_discovery_of_a_missing_folder(tmp_path: Path) -> None:
    folder = tmp_path / "nope"
    found = discover_metadata(folder)
    assert found.entries == ()
    assert [str(error) for error in found.errors] == [
        f"{folder}: cannot list folder: No such file or directory"
    ]


def test_discovery_of_an_empty_folder(tmp_path: Path) -> None:
    assert discover_metadata(tmp_path) == Discovery()


def test_discovery_reads_symlinked_files_but_not_symlinked_folders(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    target = put(outside, "real.json", doc(workflow_name="linked"))
    put(outside, "sub/inner.json", doc(workflow_name="not_followed"))
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(target, root / "link.json")
    os.symlink(outside / "sub", root / "sub")
    found = discover_metadata(root)
    assert [(m.workflow_name, m.path) for m in found.entries] == [
        ("linked", str(root / "link.json"))
    ]


# --- writing ----------------------------------------------------------------------


def test_write_metadata(tmp_path: Path) -> None:
    metadata = parse_metadata(doc("2020-01-01T05:30:00+05:30"))
    path = write_metadata(tmp_path, metadata)
    assert path == str(tmp_path / "core001" / "test_workflow.json")
    assert Path(path).read_text(encoding="utf-8") == CANONICAL + "\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert read_metadata(path) == metadata
    assert sorted(os.listdir(tmp_path / "core001")) == ["test_workflow.json"]


def test_write_metadata_replaces_the_old_file(tmp_path: Path) -> None:
    path = write_metadata(str(tmp_path), MigrationMetadata("c", "w", NEW_YEAR_2020))
    later = datetime(2021, 6, 1, 12, tzinfo=UTC)
    assert write_metadata(str(tmp_path), MigrationMetadata("c", "w", later)) == path
    assert read_metadata(path).migration_date == later
    assert os.listdir(tmp_path / "c") == ["w.json"]


def test_written_files_are_discovered(tmp_path: Path) -> None:
    written = [
        MigrationMetadata("core002", "b", NEW_YEAR_2020),
        MigrationMetadata("core001", "z", NEW_YEAR_2020),
        MigrationMetadata("core001", "a", datetime(2019, 5, 5, 5, 5, 5, tzinfo=UTC)),
    ]
    paths = [write_metadata(tmp_path, m) for m in written]
    found = discover_metadata(tmp_path)
    assert list(found.entries) == sorted(written, key=lambda m: (m.cluster_name, m.workflow_name))
    assert [m.path for m in found.entries] == [paths[2], paths[1], paths[0]]


@pytest.mark.parametrize(("cluster", "workflow"), [(".c", "w"), ("c", ".w")])
def test_write_metadata_refuses_hidden_names(tmp_path: Path, cluster: str, workflow: str) -> None:
    with pytest.raises(ValueError, match="starts with '.': discover_metadata.. would skip"):
        write_metadata(tmp_path, MigrationMetadata(cluster, workflow, NEW_YEAR_2020))
    assert list(tmp_path.iterdir()) == []


def test_write_metadata_leaves_no_temp_file_on_failure(tmp_path: Path) -> None:
    # The target is a folder, so the final rename fails.
    (tmp_path / "c" / "w.json").mkdir(parents=True)
    with pytest.raises(OSError):
        write_metadata(tmp_path, MigrationMetadata("c", "w", NEW_YEAR_2020))
    assert os.listdir(tmp_path / "c") == ["w.json"]


# --- handover: exact examples -----------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "recurrence", "migration", "expected"),
    [
        # Daily at 00:00:01 from 2015-01-01; migrated 2020-01-01 00:00:00: Pinball's
        # last run is 2019-12-31 00:00:01, Airflow's first 2020-01-01 00:00:01.
        (1_420_070_401, DAY, NEW_YEAR_2020_EPOCH, Handover(1_577_750_401, 1_577_836_801)),
        # Migrated exactly on a run: that run is Pinball's, the next one Airflow's.
        (1_420_070_401, DAY, 1_577_836_801, Handover(1_577_836_801, 1_577_923_201)),
        # Migrated one second before a run: that run is Airflow's.
        (1_420_070_401, DAY, 1_577_836_800, Handover(1_577_750_401, 1_577_836_801)),
        # Migrated before the reference: Pinball never ran; Airflow starts at it.
        (1_420_070_401, DAY, 1_420_070_400, Handover(None, 1_420_070_401)),
        (1_420_070_401, DAY, 0, Handover(None, 1_420_070_401)),
        # Migrated at the reference: Pinball's only run is the reference.
        (1_420_070_401, DAY, 1_420_070_401, Handover(1_420_070_401, 1_420_156_801)),
        # Every 7 h from 2015-01-01 00:00, migrated 2015-01-05 10:00: 09:00 / 16:00.
        (1_420_070_400, 25_200, 1_420_452_000, Handover(1_420_448_400, 1_420_473_600)),
        # Hourly, migrated 2020-01-01 00:00 exactly on a run.
        (1_420_070_400, 3_600, NEW_YEAR_2020_EPOCH, Handover(1_577_836_800, 1_577_840_400)),
        # Weekly on Sundays from 2015-01-04, migrated Thursday 2015-01-08.
        (1_420_329_600, WEEK, 1_420_675_200, Handover(1_420_329_600, 1_420_934_400)),
    ],
)
def test_handover_examples(
    reference: int, recurrence: int, migration: int, expected: Handover
) -> None:
    assert handover(reference, recurrence, migration) == expected


def test_handover_from_a_metadata_file() -> None:
    metadata = parse_metadata(doc("2020-01-01T05:30:00+05:30"))
    assert handover(1_420_070_401, DAY, metadata.migration_epoch) == Handover(
        last_legacy_run=1_577_750_401, first_new_run=1_577_836_801
    )


def test_handover_refuses_a_bad_recurrence() -> None:
    with pytest.raises(ValueError, match="recurrence must be a positive number of seconds"):
        handover(0, 0, 10)


# --- handover: properties against brute-force enumeration -------------------------


def enumerate_handover(reference: int, recurrence: int, migration: int) -> Handover:
    """Step k = 0, 1, 2, ... and split the runs at the migration date."""
    pinball_runs = []
    k = 0
    while reference + k * recurrence <= migration:
        pinball_runs.append(reference + k * recurrence)
        k += 1
    airflow_first = reference + k * recurrence
    return Handover(pinball_runs[-1] if pinball_runs else None, airflow_first)


recurrences = st.one_of(
    st.sampled_from([60, 300, 3_600, 25_200, 43_200, DAY, 3 * DAY, WEEK, 4 * WEEK]),
    st.integers(min_value=60, max_value=4 * WEEK),  # arbitrary seconds, odd ones included
)
references = st.integers(min_value=0, max_value=4_102_444_800)  # 1970 .. 2100


@st.composite
def migrations(draw) -> tuple[int, int, int]:
    reference = draw(references)
    recurrence = draw(recurrences)
    kind = draw(st.sampled_from(["before", "at_reference", "on_grid", "between", "far_after"]))
    if kind == "before":
        migration = reference - draw(st.integers(min_value=1, max_value=10 * 365 * DAY))
    elif kind == "at_reference":
        migration = reference
    else:
        if kind == "far_after":
            periods = draw(st.integers(min_value=1_000, max_value=4_999))
        else:
            periods = draw(st.integers(min_value=0, max_value=4_999))
        offset = 0 if kind == "on_grid" else draw(st.integers(1, recurrence - 1))
        migration = reference + periods * recurrence + offset
    return reference, recurrence, migration


@settings(max_examples=400, deadline=None)
@given(migrations())
def test_handover_matches_enumeration(case: tuple[int, int, int]) -> None:
    reference, recurrence, migration = case
    result = handover(reference, recurrence, migration)
    assert result == enumerate_handover(reference, recurrence, migration)
    # The contract in words: no over-run, no miss-run, no gap between the two.
    assert result.first_new_run > migration
    assert result.first_new_run >= reference
    if result.last_legacy_run is None:
        assert migration < reference
        assert result.first_new_run == reference
    else:
        assert reference <= result.last_legacy_run <= migration
        assert result.first_new_run - result.last_legacy_run == recurrence


@settings(max_examples=150, deadline=None)
@given(
    reference=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
    recurrence=st.sampled_from(
        [timedelta(minutes=1), timedelta(hours=7), timedelta(days=1), timedelta(weeks=4)]
    )
    | st.integers(60, 4 * WEEK).map(lambda s: timedelta(seconds=s)),
    periods=st.integers(0, 4_999),
    offset=st.floats(-1.0, 1.0),
    zone=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    ),
)
def test_handover_through_a_metadata_file_matches_datetime_enumeration(
    reference: datetime, recurrence: timedelta, periods: int, offset: float, zone: timezone
) -> None:
    # The whole path with datetimes only: a migration date written in some zone, with
    # a fraction of a second, parsed from a file; the runs enumerated as datetimes.
    reference = reference.replace(microsecond=0)
    migration = (reference + periods * recurrence + offset * recurrence).astimezone(zone)
    text = doc(migration.isoformat())
    metadata = parse_metadata(text, "x.json")

    runs = []
    run = reference
    while run <= migration:
        runs.append(run)
        run += recurrence
    epoch = datetime(1970, 1, 1, tzinfo=UTC)

    def to_epoch(value: datetime) -> int:
        return (value - epoch) // timedelta(seconds=1)

    expected = Handover(to_epoch(runs[-1]) if runs else None, to_epoch(run))
    got = handover(
        to_epoch(reference), recurrence // timedelta(seconds=1), metadata.migration_epoch
    )
    assert got == expected


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"), min_size=1
    ).filter(lambda s: s.strip() and s not in (".", "..")),
)
def test_to_json_round_trips(date: datetime, name: str) -> None:
    metadata = MigrationMetadata(name, name, date)
    again = parse_metadata(metadata.to_json())
    assert again == metadata
    assert again.migration_date == date.replace(microsecond=0)
    assert again.to_json() == metadata.to_json()
