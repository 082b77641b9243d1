"""The catalog's file watch: which of the files a parse read have changed since.

Where the platform has file-system notifications (Linux inotify, through
``inotify_simple``) and a folder is on a local file system, the watch subscribes to the
folders that hold the watched paths, and a poll re-hashes only the paths an event named:
its cost no longer grows with the number of files. Everything else is polled: every
watched path's stat signature is compared at every poll, and a path whose signature
changed is re-hashed. A path is polled when notifications cannot see it: a symbolic link
(its target changes elsewhere), a folder on a network or user-space file system (another
machine's writes raise no event), or a folder the kernel refused to watch (the
``fs.inotify.max_user_watches`` limit).

Either way a change is confirmed by comparing content digests, so the catalog re-parses
exactly when a file differs from what the last parse read. What a folder's notifications
cannot tell: a write through another hard link to a watched file (another name for the
same file; git checkouts and editors do not make them); ``Reload`` covers such a setup.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping

from legacy_parser.digests import file_digest, folder_listing
from token_fetcher.folder_watches import TIMESTAMP_GRANULARITY_NS, FolderWatches


class FileWatch:
    """The files a cluster's parse depends on, and the content each had when parsed.

    A path ending in a separator stands for that folder's listing. ``notify=False``
    polls every path, as on a platform without notifications.
    """

    def __init__(self, notify: bool = True) -> None:
        self._expected: dict[str, str | None] = {}
        self._stats: dict[str, tuple | None] = {}
        # Paths that changed during the last parse, which the next ``changed`` reports: their
        # events were read by ``reset``, so none will wake a poller waiting for one.
        self.suspects = False
        self._notifier = FolderWatches.open() if notify else None

    def __len__(self) -> int:
        return len(self._expected)

    @property
    def notified(self) -> int:
        """How many watched paths rely on notifications rather than polling."""
        return 0 if self._notifier is None else len(self._expected) - len(self._polled)

    @property
    def _polled(self) -> Iterable[str]:
        return self._expected if self._notifier is None else self._notifier.polled

    def parse_begins(self) -> dict[str, tuple | None]:
        """A parse of these files begins: the stat signature of every polled path, now,
        for ``reset`` to tell a path that changed during the parse. A notified path needs
        none: its change during the parse waits as an event, which ``reset`` reads (and a
        folder watched only from the reset on is re-hashed at the next poll), so a large
        notified tree costs no stat of every file before each parse. The notifications
        (and first-watch marks) waiting now are dropped: the parse reads what they
        announce, and ``reset`` would take them for changes during it."""
        if self._notifier is not None:
            self._notifier.pending()
        self.suspects = False
        return {path: _stat_signature(path) for path in self._polled}

    def reset(self, parsed: Mapping[str, str], also: Iterable[str],
              before: Mapping[str, tuple | None] | None = None,
              read_since_ns: int | None = None) -> None:
        """Expect ``parsed`` (path -> sha the parse saw); track ``also`` as it is now.

        ``before`` holds the signatures taken just before the parse: a path that changed
        since may have been read before the change and hashed after it (or, like the
        Pinball YAML, read before the parse and hashed now), so it is expected as nothing,
        and the next poll re-parses.

        ``read_since_ns``: when the parse began (``time.time_ns()``). A folder watched
        only from now on may hold files changed after the parse read them: the next poll
        re-hashes those whose status changed since then (by the file system's change
        time, which no user can set), or all of them when it is not given.
        """
        expected = dict(parsed)
        for path in also:
            if path not in expected:
                expected[path] = _current_digest(path)
        suspect = [path for path, signature in (before or {}).items()
                   if path in expected and _stat_signature(path) != signature]
        if self._notifier is not None:
            # Events that wait now name notified paths that changed during the parse (or
            # just before it, which costs at most one parse more).
            suspect.extend(path for path in self._notifier.pending() if path in expected)
        for path in suspect:
            expected[path] = ""
        self.suspects = bool(suspect)
        same_paths = expected.keys() == self._expected.keys()
        self._expected = expected
        self._stats = {}
        if self._notifier is not None:
            # A re-parse mostly reads the same files again: then the folders, watches and
            # polled paths stay as they are (tracking 180,000 paths anew costs 0.4 s).
            self._notifier.track(expected, unchanged=same_paths, changed_since_ns=read_since_ns)
            self._notifier.mark(suspect)
            # A folder watched only now may hold a file changed during the parse, which no
            # event will announce: the poller looks at once.
            self.suspects = self.suspects or self._notifier.marked

    def changed(self) -> list[str]:
        """Paths whose content differs from what the last parse saw."""
        self.suspects = False
        changed = []
        now_ns = time.time_ns()
        for path in self._polled:
            signature = _stat_signature(path)
            if path in self._stats and self._stats[path] == signature:
                continue
            # A file modified within the file system's timestamp granularity can be
            # rewritten, same size, without its signature changing ("racy" stat): trust
            # a signature only once it is older than that, until then re-hash each poll.
            if signature is not None and now_ns - signature[0] < TIMESTAMP_GRANULARITY_NS:
                self._stats.pop(path, None)  # racy: not trusted (nor taken for missing)
            else:
                self._stats[path] = signature
            if _current_digest(path) != self._expected[path]:
                changed.append(path)
                self._stats[path] = signature  # the re-parse this starts resets the watch
        if self._notifier is not None:
            polled = self._notifier.polled
            changed.extend(path for path in sorted(self._notifier.pending())
                           if path in self._expected and path not in polled
                           and _current_digest(path) != self._expected[path])
        return changed

    def fileno(self) -> int | None:
        """A descriptor that turns readable when a watched folder reports an event, or
        None when polling only."""
        return None if self._notifier is None else self._notifier.fileno()

    def close(self) -> None:
        if self._notifier is not None:
            self._notifier.close()


def _stat_signature(path: str) -> tuple | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino, stat.st_mode)


def _current_digest(path: str) -> str | None:
    try:
        if path.endswith(os.sep):
            return folder_listing(path)[1]
        return file_digest(path)
    except OSError:
        return None
