"""Where a parse says a file is: paths relative to the repo root, through symbolic links.

The locator resolves each folder once rather than every path component of every file
(a large JSON tree reads 150,000 files); these tests hold it to what
``os.path.relpath(os.path.realpath(path), root)`` gives for every kind of path a parse
meets, links included.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from legacy_parser.errors import Locator


def _by_realpath(root: str, path: str) -> str:
    """The definition the locator must agree with."""
    if not path or not os.path.isabs(path):
        return path
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    if real == real_root or real.startswith(real_root + os.sep):
        return os.path.relpath(real, real_root)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A repo with plain files, a linked folder and linked files pointing inside and
    outside it; returns (repo, outside)."""
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    (repo / "workflow" / "daily" / "job").mkdir(parents=True)
    (repo / "shared").mkdir()
    outside.mkdir()
    (repo / "workflow" / "daily" / "schedule").write_text("{}")
    (repo / "workflow" / "daily" / "job" / "extract").write_text("{}")
    (repo / "shared" / "load").write_text("{}")
    (outside / "secret").write_text("{}")
    (repo / "workflow" / "linked").symlink_to(repo / "workflow" / "daily")
    (repo / "workflow" / "daily" / "job" / "load").symlink_to(repo / "shared" / "load")
    (repo / "workflow" / "daily" / "job" / "escape").symlink_to(outside / "secret")
    (repo / "workflow" / "away").symlink_to(outside)
    (repo / "workflow" / "dangling").symlink_to(repo / "nowhere")
    return repo, outside


def test_paths_in_the_repo_are_relative_to_it(tree):
    repo, _ = tree
    locator = Locator(str(repo))
    assert locator.relative(str(repo / "workflow" / "daily" / "job" / "extract")) \
        == "workflow/daily/job/extract"
    assert locator.relative(str(repo)) == "."
    assert locator.relative(str(repo / "workflow")) == "workflow"


def test_links_are_followed_wherever_they_sit_in_the_path(tree):
    repo, outside = tree
    locator = Locator(str(repo))
    # a linked folder, then a plain file in it
    assert locator.relative(str(repo / "workflow" / "linked" / "job" / "extract")) \
        == "workflow/daily/job/extract"
    # a linked file in a plain folder
    assert locator.relative(str(repo / "workflow" / "daily" / "job" / "load")) \
        == "shared/load"
    # the same linked file through the linked folder
    assert locator.relative(str(repo / "workflow" / "linked" / "job" / "load")) \
        == "shared/load"
    # out of the repo: the path as given
    escape = str(repo / "workflow" / "daily" / "job" / "escape")
    assert locator.relative(escape) == escape
    through = str(repo / "workflow" / "away" / "secret")
    assert locator.relative(through) == through
    assert locator.relative(str(outside / "secret")) == str(outside / "secret")


def test_every_path_of_the_tree_agrees_with_realpath(tree):
    repo, outside = tree
    paths = [str(repo), str(repo) + os.sep, str(outside), "", "<frozen importlib._bootstrap>",
             str(repo / "workflow" / "daily" / ".." / "daily" / "schedule"),
             str(repo / "workflow" / "daily" / "."),
             str(repo / "workflow" / "daily" / ".."),
             str(repo / "workflow" / "dangling" / "x"),
             str(repo / "workflow" / "missing" / "job" / "x"),
             str(repo / "workflow" / "daily" / "schedule" / "not-a-folder"),
             str(repo / "workflow") + "//daily/schedule"]
    for folder, subfolders, files in os.walk(repo, followlinks=True):
        paths.append(folder)
        paths.extend(os.path.join(folder, name) for name in subfolders + files)
    locator = Locator(str(repo))
    for path in paths * 2:  # the second time from what the locator has resolved
        assert locator.relative(path) == _by_realpath(str(repo), path), path


def test_a_repo_root_given_through_a_link_is_resolved(tree, tmp_path):
    repo, _ = tree
    (tmp_path / "checkout").symlink_to(repo)
    locator = Locator(str(tmp_path / "checkout"))
    assert locator.relative(str(tmp_path / "checkout" / "shared" / "load")) == "shared/load"
    assert locator.relative(str(repo / "shared" / "load")) == "shared/load"
