"""The catalog's file watch on real files: file-system notifications where the platform has
them, polling as the fallback; both must report every change a fresh parse would see."""

from __future__ import annotations

import os
import select
import sys
import time
from pathlib import Path

import pytest

from legacy_parser.digests import file_digest, folder_listing
from legacy_parser.model import SourceFile
from tests.helpers import wait_for
from token_fetcher.watch import FileWatch
from token_fetcher.watch_scope import ParsedPaths

MODES = [pytest.param(True, id="notify"), pytest.param(False, id="poll")]
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="inotify is Linux's")


def listing(folder: Path) -> str:
    return str(folder) + os.sep


def digest(path: str) -> str:
    return folder_listing(path)[1] if path.endswith(os.sep) else file_digest(path)


def repo(root: Path, content: str = "v1") -> list[str]:
    """A JSON-style repo; its files and listings, as a parse of it records them."""
    job = root / "workflow" / "wf" / "job"
    job.mkdir(parents=True)
    (root / "workflow" / "wf" / "schedule").write_text(f"schedule {content}\n")
    (job / "extract").write_text(f"extract {content}\n")
    (job / "load").write_text(f"load {content}\n")
    return [listing(root), listing(root / "workflow"), listing(root / "workflow" / "wf"),
            listing(job), str(root / "workflow" / "wf" / "schedule"), str(job / "extract"),
            str(job / "load")]


def watching(paths: list[str], notify: bool) -> FileWatch:
    watch = FileWatch(notify=notify)
    watch.reset({path: digest(path) for path in paths}, [])
    assert watch.changed() == []  # the first poll confirms what the parse read
    return watch


def changes(watch: FileWatch) -> list[str]:
    return wait_for(watch.changed, timeout=10, message="the watch to report a change")


@pytest.fixture(params=MODES)
def notify(request) -> bool:
    if request.param and sys.platform != "linux":
        pytest.skip("inotify is Linux's")
    return request.param


def test_an_edit_in_place_is_reported_once(tmp_path, notify):
    paths = repo(tmp_path)
    watch = watching(paths, notify)
    job = tmp_path / "workflow" / "wf" / "job" / "extract"
    job.write_text("extract v2 with more\n")
    assert changes(watch) == [str(job)]
    assert watch.changed() == []  # the re-parse this starts resets the watch
    watch.close()


def test_a_file_changed_during_a_parse_that_hashed_it_afterwards_is_reported(tmp_path,
                                                                             notify):
    """A parse that imports a file, which is then replaced before the parse hashes it,
    records the new content for a parse of the old one: the next poll must re-parse."""
    paths = repo(tmp_path)
    watch = watching(paths, notify)
    before = watch.parse_begins()  # as the catalog calls it when the parse starts
    job = tmp_path / "workflow" / "wf" / "job" / "extract"
    job.write_text("extract v2, written after the parse read v1\n")
    watch.reset({path: digest(path) for path in paths}, [], before)  # hashed after it
    assert changes(watch) == [str(job)]
    watch.close()


def test_an_atomic_replace_a_new_file_and_a_deletion_are_reported(tmp_path, notify):
    paths = repo(tmp_path)
    watch = watching(paths, notify)
    job_folder = tmp_path / "workflow" / "wf" / "job"
    (job_folder / "load.tmp").write_text("load v2\n")
    os.replace(job_folder / "load.tmp", job_folder / "load")  # how editors and git write
    assert changes(watch) == [str(job_folder / "load")]

    (job_folder / "transform").write_text("transform\n")
    assert changes(watch) == [listing(job_folder)]

    watch.reset({path: digest(path) for path in paths}, [])
    watch.changed()
    (tmp_path / "workflow" / "wf" / "schedule").unlink()
    assert sorted(changes(watch)) == [listing(tmp_path / "workflow" / "wf"),
                                      str(tmp_path / "workflow" / "wf" / "schedule")]
    watch.close()


def test_a_folder_renamed_away_and_replaced_is_reported(tmp_path, notify):
    """The files' paths now name other files: each must be compared again."""
    paths = repo(tmp_path)
    watch = watching(paths, notify)
    os.rename(tmp_path / "workflow", tmp_path / "old")
    repo(tmp_path, content="v2")
    reported = set(wait_for(watch.changed, timeout=10))
    assert str(tmp_path / "workflow" / "wf" / "job" / "extract") in reported
    assert listing(tmp_path) in reported  # "old" appeared beside "workflow"
    watch.close()


def test_a_repo_behind_a_swapped_symbolic_link_is_reported(tmp_path, notify):
    """A deploy that points a link at a new release changes every file behind it."""
    repo(tmp_path / "release-1", content="v1")
    repo(tmp_path / "release-2", content="v2")
    root = tmp_path / "repo"
    root.symlink_to(tmp_path / "release-1")
    watch = watching(repo_paths(root), notify)
    (tmp_path / "next").symlink_to(tmp_path / "release-2")
    os.replace(tmp_path / "next", root)
    reported = set(changes(watch))
    assert str(root / "workflow" / "wf" / "job" / "extract") in reported
    watch.close()


def repo_paths(root: Path) -> list[str]:
    job = root / "workflow" / "wf" / "job"
    return [listing(root), listing(root / "workflow"), listing(job), str(job / "extract")]


def linked_module(root: Path) -> tuple[Path, Path]:
    """``root/repo/templates.py``, a link to ``root/shared/templates.py``: (target, link)."""
    (root / "shared").mkdir()
    target = root / "shared" / "templates.py"
    target.write_text("A = 1\n")
    (root / "repo").mkdir()
    link = root / "repo" / "templates.py"
    link.symlink_to(target)
    return target, link


def test_a_linked_file_whose_target_changes_is_reported(tmp_path, notify):
    target, link = linked_module(tmp_path)
    watch = watching([str(link), listing(tmp_path / "repo")], notify)
    target.write_text("A = 22\n")
    assert changes(watch) == [str(link)]
    watch.close()


def test_a_link_stays_watched_across_re_parses_and_a_file_replaced_by_one_is_too(tmp_path,
                                                                                 notify):
    """A re-parse tracks the same paths again without looking at each one anew: a link
    found before stays polled, and a file replaced by a link (same content, so no
    re-parse) is polled from the event on."""
    target, link = linked_module(tmp_path)
    plain = tmp_path / "repo" / "jobs.py"
    plain.write_text("B = 1\n")
    paths = [str(link), str(plain), listing(tmp_path / "repo")]
    watch = watching(paths, notify)
    watch.reset({path: digest(path) for path in paths}, [])  # the next parse's
    assert watch.changed() == []
    target.write_text("A = 22\n")
    assert changes(watch) == [str(link)]

    watch.reset({path: digest(path) for path in paths}, [])
    other = tmp_path / "shared" / "jobs.py"
    other.write_text("B = 1\n")
    (tmp_path / "repo" / "next").symlink_to(other)
    os.replace(tmp_path / "repo" / "next", plain)  # the same content, through a link
    assert str(plain) not in watch.changed()  # read, and nothing a parse would see
    other.write_text("B = 333\n")
    assert str(plain) in changes(watch)
    watch.close()


def test_a_missing_folder_is_reported_when_it_appears(tmp_path, notify):
    """After a parse that read nothing (the repo folder vanished), the last good parse's
    files are watched as they are now, missing: their return must start a retry."""
    paths = repo(tmp_path / "repo")
    os.rename(tmp_path / "repo", tmp_path / "gone")
    watch = FileWatch(notify=notify)
    watch.reset({}, paths)
    assert watch.changed() == []
    os.rename(tmp_path / "gone", tmp_path / "repo")
    assert set(changes(watch)) == set(paths)
    watch.close()


@linux_only
def test_notifications_see_an_edit_that_keeps_every_stat_field(tmp_path):
    """A same-size rewrite whose timestamp is set back is invisible to stat polling
    once the old signature is trusted; an inotify event still names the file."""
    path = tmp_path / "workflows.py"
    path.write_text("PRIORITY = 30\n")
    old = path.stat().st_mtime_ns - 60_000_000_000  # past the racy window
    os.utime(path, ns=(old, old))
    watch = watching([str(path)], notify=True)
    assert watch.notified == 1
    with open(path, "r+") as handle:  # same inode, same size
        handle.write("PRIORITY = 31\n")
    os.utime(path, ns=(old, old))
    assert changes(watch) == [str(path)]
    watch.close()


@linux_only
def test_only_links_are_polled_when_notifications_are_available(tmp_path):
    paths = repo(tmp_path / "repo")
    (tmp_path / "repo" / "linked").symlink_to(tmp_path / "repo" / "workflow" / "wf" / "schedule")
    watch = watching([*paths, str(tmp_path / "repo" / "linked")], notify=True)
    assert watch.notified == len(paths)
    assert len(watch) == len(paths) + 1
    watch.close()


@linux_only
def test_a_first_watch_looks_only_at_files_changed_since_the_parse_began(tmp_path):
    """Taking up the watch of a large tree for the first time, a file whose change time is
    older than the parse is as the parse read it: it costs a stat, not a hash. Here the
    digests given are deliberately not the files', so any file hashed would be
    reported."""
    paths = repo(tmp_path)
    began = time.time_ns() + 3_000_000_000  # over 2 s after the files last changed
    watch = FileWatch()
    watch.reset({path: "not-what-the-file-holds" for path in paths}, [], read_since_ns=began)
    assert watch.changed() == []
    watch.close()


@linux_only
def test_a_file_changed_between_the_parse_and_a_first_watch_is_reported(tmp_path):
    paths = repo(tmp_path)
    read = {path: digest(path) for path in paths}  # what the parse read
    began = time.time_ns()
    job = tmp_path / "workflow" / "wf" / "job" / "extract"
    job.write_text("extract v2, written before the watch was taken up\n")
    watch = FileWatch()
    watch.reset(read, [], read_since_ns=began)
    # No event will announce it (the folder was not watched yet): the poller must look
    # at once, not at its next poll, which may be an hour away.
    assert watch.suspects
    assert changes(watch) == [str(job)]
    assert not watch.suspects
    watch.close()


def test_a_re_parse_of_the_same_files_and_one_that_reads_more_keep_watching(tmp_path, notify):
    """A re-parse that read the same paths keeps the watch as it was; one that read a
    file in a new folder watches that folder too."""
    paths = repo(tmp_path)
    watch = watching(paths, notify)
    watch.reset({path: digest(path) for path in paths}, [])
    assert watch.changed() == []
    job = tmp_path / "workflow" / "wf" / "job" / "extract"
    job.write_text("extract v2\n")
    assert changes(watch) == [str(job)]

    (tmp_path / "workflow" / "new" / "job").mkdir(parents=True)
    added = tmp_path / "workflow" / "new" / "job" / "extract"
    added.write_text("new extract\n")
    assert changes(watch) == [listing(tmp_path / "workflow")]  # which re-parses
    more = [*paths, listing(tmp_path / "workflow" / "new" / "job"), str(added)]
    watch.reset({path: digest(path) for path in more}, [])
    assert watch.changed() == []
    added.write_text("new extract v2\n")
    job.write_text("extract v3\n")
    assert sorted(changes(watch)) == sorted([str(added), str(job)])
    watch.close()


def test_a_change_during_the_parse_is_suspected_until_the_next_poll(tmp_path, notify):
    """Its event (or changed signature) is taken up by the reset, so nothing else would
    wake a poller waiting for one: the watch says so until a poll has looked."""
    paths = repo(tmp_path)
    watch = watching(paths, notify)
    before = watch.parse_begins()
    read = {path: digest(path) for path in paths}  # the parse reads the files
    job = tmp_path / "workflow" / "wf" / "job" / "extract"
    job.write_text("extract v2, written while the parse ran\n")
    os.utime(job, ns=(1, 1))  # an old timestamp: a poll's signature check alone would trust it
    wait_for(lambda: notify is False or watch.fileno() is None or _readable(watch.fileno()),
             timeout=10, message="the event")
    watch.reset(read, [], before)
    assert watch.suspects
    assert watch.changed() == [str(job)]
    assert not watch.suspects
    watch.reset({path: digest(path) for path in paths}, [])
    assert not watch.suspects
    watch.close()


def test_a_change_made_before_the_parse_began_is_not_taken_for_one_during_it(tmp_path,
                                                                            notify):
    """Its event waits until the parse begins; the parse reads the new content, so the
    reset after it must not ask for one more parse."""
    paths = repo(tmp_path)
    watch = watching(paths, notify)
    job = tmp_path / "workflow" / "wf" / "job" / "extract"
    job.write_text("extract v2, written before the parse\n")
    wait_for(lambda: notify is False or watch.fileno() is None or _readable(watch.fileno()),
             timeout=10, message="the event")
    before = watch.parse_begins()
    watch.reset({path: digest(path) for path in paths}, [], before)  # it read v2
    assert not watch.suspects
    assert watch.changed() == []
    watch.close()


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


@pytest.mark.parametrize("root", ["/srv/repo", "/srv/repo/", "/", "repo", ""])
def test_parsed_paths_join_as_os_path_join_does(root):
    files = (SourceFile("defs/workflows.py", "a"), SourceFile("workflow/daily/", "b"),
             SourceFile("", "c"), SourceFile("/elsewhere/module.py", "d"),
             SourceFile("a//b.py", "e"), SourceFile("../outside.json", "f"))
    assert ParsedPaths(root).of(files) == joined(root, files)


def joined(root: str, files) -> dict[str, str]:
    return {os.path.join(root, file.path): file.sha256 for file in files}


def test_parsed_paths_after_a_re_parse_are_those_of_a_fresh_join():
    """A re-parse gives back the same objects for unchanged files; whatever else it
    gives, the mapping is what joining every path afresh gives."""
    root = "/srv/repo"
    first = tuple(SourceFile(f"workflow/w{n}/job.json", f"sha{n}") for n in range(5))
    paths = ParsedPaths(root)
    mappings = [paths.of(first)]
    edited = (*first[:2], SourceFile("workflow/w2/job.json", "edited"), *first[3:])
    renamed = (*edited[:4], SourceFile("workflow/w9/job.json", "sha9"))
    for files in (edited, edited, renamed, renamed[:3], first):
        mappings.append(paths.of(files))
        assert mappings[-1] == joined(root, files)
    # Each mapping is left as it was given.
    assert mappings[0] == joined(root, first) and mappings[1] == joined(root, edited)
