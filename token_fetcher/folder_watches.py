"""inotify watches on the folders that hold a file watch's paths: which of them an event
named since the last look (see ``token_fetcher.watch``, which polls the rest)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

# The file watch's logger: docs/operations.md tells operators what it warns of.
log = logging.getLogger("token_fetcher.watch")

try:
    import inotify_simple
except ImportError:  # not Linux: polling only
    inotify_simple = None

__all__ = ["TIMESTAMP_GRANULARITY_NS", "FolderWatches"]

# Coarser than the timestamps of common file systems (ext4 ticks, 1 s on some network ones).
TIMESTAMP_GRANULARITY_NS = 2_000_000_000


def _changed_since(paths: Iterable[str], since_ns: int) -> list[str]:
    """The paths whose status changed at ``since_ns`` or after (within the timestamp
    granularity), or that cannot be looked at. A change of content, name or permissions
    sets the change time to the kernel's clock; unlike the modification time no
    ``utime`` call can set it back. Checking this costs a stat, against a read and hash
    of the whole file (a first watch of 160,000 JSON files: about 0.5 s against 4 s)."""
    changed = []
    for path in paths:
        try:
            changed_at = os.stat(path).st_ctime_ns
        except OSError:
            changed.append(path)
            continue
        if changed_at >= since_ns - TIMESTAMP_GRANULARITY_NS:
            changed.append(path)
    return changed


def _identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


# File systems whose changes all pass through this kernel, so inotify sees every one.
# Others (nfs, cifs, fuse, 9p, ...) are polled.
_LOCAL_FILE_SYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs",
                                 "tmpfs", "ramfs", "overlay", "bcachefs", "jfs", "reiserfs"})


def _mount_types() -> list[tuple[str, str]]:
    """(mount point, file system type), the longest mount points first."""
    mounts = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split()
                separator = fields.index("-")
                # Spaces and the like in a mount point are escaped as octal (\040).
                point = fields[4].encode("latin-1", "surrogateescape") \
                    .decode("unicode_escape")
                mounts.append((point, fields[separator + 1]))
    except (OSError, ValueError, IndexError):
        return []
    return sorted(mounts, key=lambda mount: len(mount[0]), reverse=True)


def _file_system(path: str, mounts: list[tuple[str, str]]) -> str:
    real = os.path.realpath(path)
    for point, kind in mounts:
        if real == point or real.startswith(point.rstrip("/") + "/"):
            return kind
    return ""


@dataclass
class _Folder:
    paths: set[str] = field(default_factory=set)  # the watched paths it holds
    children: set[str] = field(default_factory=set)  # tracked subfolders it covers
    covered: bool = False  # its parent's events tell when its path starts naming another
    wd: int | None = None
    identity: tuple[int, int] | None = None  # (device, inode) its path named when watched
    link: bool | None = None  # whether its path was a symbolic link when watched


class FolderWatches:
    """inotify watches on the folders that hold the watched paths.

    A folder's events name the paths in it that changed. A folder can stop being the one
    its path names (renamed, deleted, a symbolic link swapped): for a folder whose parent
    is watched, the parent's events tell; the others ("roots", few) are compared by device
    and inode at every poll. Either way the folder is watched anew and its paths and
    those of the folders below it are re-hashed.
    """

    @classmethod
    def open(cls) -> FolderWatches | None:
        if inotify_simple is None:
            return None
        try:
            return cls(inotify_simple.INotify())
        except OSError as error:  # fs.inotify.max_user_instances reached, say
            log.warning("file-system notifications are unavailable (%s); polling instead",
                        error)
            return None

    def __init__(self, inotify) -> None:
        flags = inotify_simple.flags
        self._mask = (flags.MODIFY | flags.ATTRIB | flags.CLOSE_WRITE | flags.CREATE
                      | flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO | flags.DELETE_SELF
                      | flags.MOVE_SELF | flags.ONLYDIR)
        self._entries = flags.CREATE | flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO
        self._self_gone = flags.DELETE_SELF | flags.MOVE_SELF | flags.IGNORED | flags.UNMOUNT
        self._overflow = flags.Q_OVERFLOW
        self._inotify = inotify
        self._folders: dict[str, _Folder] = {}
        self._by_wd: dict[int, set[str]] = {}
        self._dirty: set[str] = set()
        self.polled: set[str] = set()
        self._mounts: list[tuple[str, str]] | None = None  # when track last grouped paths
        self._refused_logged = False

    def track(self, paths: Iterable[str], unchanged: bool = False,
              changed_since_ns: int | None = None) -> None:
        """Watch these paths (and only these) from now on; ``unchanged``: the ones
        tracked already. The paths of a folder watched only now are taken as changed if
        their status changed since ``changed_since_ns`` (all of them if None)."""
        mounts = _mount_types()
        if unchanged and mounts == self._mounts:
            self._watch_unwatched(changed_since_ns)
            return
        self._mounts = mounts
        wanted: dict[str, set[str]] = {}
        for path in paths:
            wanted.setdefault(_folder_of(path), set()).add(path)
        for name in [name for name in self._folders if name not in wanted]:
            self._unwatch(name)
            del self._folders[name]
        polled_before, self.polled = self.polled, set()
        for name, held in wanted.items():
            folder = self._folders.get(name)
            if folder is None:
                if _file_system(name, mounts) not in _LOCAL_FILE_SYSTEMS:
                    self.polled.update(held)
                    continue
                folder = self._folders[name] = _Folder()
            # A symbolic link's target changes in another folder, unseen here. Paths this
            # folder held before were looked at then (and an event about one replaced
            # since looks again), so only new ones cost a stat: a re-parse of a large
            # tree tracks the same paths again.
            self.polled.update(held & folder.paths & polled_before)
            self.polled.update(path for path in held - folder.paths
                               if not path.endswith(os.sep) and os.path.islink(path))
            folder.paths = held
        for name, folder in self._folders.items():
            if folder.link is None:
                folder.link = os.path.islink(name)
            folder.covered = os.path.dirname(name) in self._folders and not folder.link
            folder.children = set()
        for name, folder in self._folders.items():
            if folder.covered:
                self._folders[os.path.dirname(name)].children.add(name)
        self._watch_unwatched(changed_since_ns)

    def _watch_unwatched(self, changed_since_ns: int | None) -> None:
        """Watch the folders that are new, or were missing or refused when last tried."""
        for name, folder in self._folders.items():
            if folder.wd is None:
                self._watch(name, below=False, changed_since_ns=changed_since_ns)

    def mark(self, paths: Iterable[str]) -> None:
        self._dirty.update(paths)

    @property
    def marked(self) -> bool:
        """Whether paths wait for ``pending`` that no event announced: marked, or found
        changed when their folder was first watched."""
        return bool(self._dirty)

    def pending(self) -> set[str]:
        """The paths that may have changed since the last call."""
        for event in self._inotify.read(timeout=0):
            self._handle(event)
        for name, folder in list(self._folders.items()):
            if (not folder.covered or folder.wd is None) \
                    and _identity(name) != folder.identity:
                self._watch(name)
        dirty, self._dirty = self._dirty, set()
        return dirty

    def fileno(self) -> int | None:
        return None if self._inotify.closed else self._inotify.fileno()

    def close(self) -> None:
        self._inotify.close()

    def _handle(self, event) -> None:
        if event.mask & self._overflow:  # events were lost: trust nothing
            for name, folder in list(self._folders.items()):
                if not folder.covered:
                    self._watch(name)
            return
        for name in list(self._by_wd.get(event.wd, ())):
            folder = self._folders[name]
            if event.mask & self._self_gone:
                self._watch(name)
                continue
            if not event.name:  # the folder itself (its permissions, say)
                self._dirty.update(folder.paths)
                continue
            path = os.path.join(name, event.name)
            if path in folder.paths:
                self._dirty.add(path)
                if event.mask & self._entries and os.path.islink(path):
                    self.polled.add(path)  # replaced by a link (see track)
            if event.mask & self._entries:
                listing = name + os.sep
                if listing in folder.paths:
                    self._dirty.add(listing)
                if path in folder.children:
                    self._watch(path)

    def _watch(self, name: str, below: bool = True, changed_since_ns: int | None = None,
               ) -> None:
        """Watch the folder ``name`` names now (and anew those below it): all their
        paths may have changed, or (a folder watched for the first time, the paths as a
        parse that began at ``changed_since_ns`` read them) those changed since."""
        folder = self._folders[name]
        self._unwatch(name)
        # The identity first: if the path changes between the two, the next check
        # sees a difference and watches again.
        folder.identity = _identity(name)
        folder.link = os.path.islink(name)
        try:
            folder.wd = self._inotify.add_watch(name, self._mask)
        except OSError as error:
            # Missing: checked at every poll until it appears. Else polled.
            if error.errno not in (errno.ENOENT, errno.ENOTDIR):
                self._refused(name, error)
        else:
            self._by_wd.setdefault(folder.wd, set()).add(name)
        # After the watch is added: a change after the look is an event.
        self._dirty.update(folder.paths if changed_since_ns is None
                           else _changed_since(folder.paths, changed_since_ns))
        if below:
            for child in folder.children:
                self._watch(child)

    def _unwatch(self, name: str) -> None:
        folder = self._folders[name]
        if folder.wd is None:
            return
        sharing = self._by_wd.get(folder.wd, set())
        sharing.discard(name)
        if not sharing:  # two paths naming one folder share its watch
            self._by_wd.pop(folder.wd, None)
            with contextlib.suppress(OSError):  # the folder is gone, and its watch with it
                self._inotify.rm_watch(folder.wd)
        folder.wd = None

    def _refused(self, name: str, error: OSError) -> None:
        self.polled.update(self._folders[name].paths)
        if not self._refused_logged:
            self._refused_logged = True
            log.warning("cannot watch the folder %s for changes (%s): its files are polled "
                        "(if the kernel refused, raise fs.inotify.max_user_watches)",
                        name, error)


def _folder_of(path: str) -> str:
    return path.rstrip(os.sep) if path.endswith(os.sep) else os.path.dirname(path)
