"""The store as the daemon uses it: every call is a coroutine that runs on one dedicated worker
thread, so SQLite (and a slow SD card) never blocks the event loop, and never raises.

When the disk fails (read-only file system, disk full, unwritable path, corrupt file) the store
logs one clear error line, sets ``healthy = False`` and ``error``, copies whatever it can still
read into memory and carries on there: the daemon keeps publishing, and only durability is
lost until the next restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from ioagent.kraken.types import CompletedDispatch, Dispatch
from ioagent.logs import get_logger
from ioagent.store.database import MEMORY, SlotRecord, Store, StoreError, migrate

log = get_logger(__name__)

T = TypeVar("T")

STORAGE_ERRORS = (sqlite3.Error, OSError, StoreError)

_SQLITE_REASONS = (
    ("SQLITE_READONLY", "database is read-only"),
    ("SQLITE_FULL", "disk full"),
    ("SQLITE_CANTOPEN", "cannot open the database file (missing directory or no permission)"),
    ("SQLITE_IOERR", "disk I/O error"),
    ("SQLITE_CORRUPT", "database file is corrupt"),
    ("SQLITE_NOTADB", "file is not an SQLite database"),
    ("SQLITE_BUSY", "database is locked by another process"),
    ("SQLITE_LOCKED", "database is locked by another process"),
    ("SQLITE_PERM", "permission denied"),
)

_OS_REASONS = {
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a parent of the path is not a directory",
    errno.EISDIR: "the path is a directory",
    errno.ENOENT: "directory does not exist",
    errno.EIO: "disk I/O error",
}


def describe_storage_error(exc: BaseException) -> str:
    """A short reason a user can act on, for the log line and the ``api`` topic."""
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", None) or ""
        for prefix, reason in _SQLITE_REASONS:
            if name.startswith(prefix):
                return reason
        return f"database error: {exc}"
    if isinstance(exc, OSError):
        if exc.errno in _OS_REASONS:
            return _OS_REASONS[exc.errno]
        return exc.strerror or str(exc)
    return str(exc)


def _salvage(path: str) -> Store:
    """Everything still readable at ``path``, copied into memory; empty memory if nothing is."""
    try:
        disk = Store.open(path, read_only=True)
    except STORAGE_ERRORS:
        return Store.open_memory()
    try:
        memory = disk.copy_to_memory()
        migrate(memory.conn)
        return memory
    except STORAGE_ERRORS:
        return Store.open_memory()
    finally:
        disk.close()


class AsyncStore:
    """Coroutine facade over :class:`Store` on a single worker thread; never raises."""

    def __init__(self, executor: ThreadPoolExecutor, path: str) -> None:
        self._executor = executor
        self._store: Store  # created on the worker thread: sqlite3 ties it to its thread
        self._closed = False
        self._queued = 0
        """Jobs handed to the worker thread and not finished yet."""
        self.path = path
        self.healthy = True
        self.error: str | None = None

    @classmethod
    async def open(cls, path: Path | str) -> AsyncStore:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ioagent-store")
        instance = cls(executor, str(path))
        await asyncio.get_running_loop().run_in_executor(executor, instance._open_sync)
        return instance

    def _open_sync(self) -> None:
        try:
            self._store = Store.open(self.path)
        except Exception as exc:  # storage errors mostly; whatever it is, run from memory
            self._degrade(exc, lambda: _salvage(self.path))

    @property
    def memory_only(self) -> bool:
        return self._store.path == MEMORY

    def _degrade(self, exc: BaseException, replacement: Callable[[], Store]) -> None:
        reason = describe_storage_error(exc)
        self.healthy = False
        self.error = f"{self.path}: {reason}"
        log.error(
            "storage failed; continuing in memory only, nothing more is saved until restart",
            path=self.path,
            reason=reason,
            detail=f"{type(exc).__name__}: {exc}",
        )
        self._store = replacement()

    def _copy_failing(self) -> Store:
        """The failing store's readable contents in memory (a full disk still reads fine)."""
        failing = self._store
        try:
            return failing.copy_to_memory()
        except STORAGE_ERRORS:
            return Store.open_memory()
        finally:
            with contextlib.suppress(*STORAGE_ERRORS):
                failing.close()

    def _guarded(self, call: Callable[[Store], T], default: T) -> T:
        try:
            return call(self._store)
        except STORAGE_ERRORS as exc:
            if self.memory_only:
                log.error("in-memory store failed", reason=describe_storage_error(exc))
                return default
            self._degrade(exc, self._copy_failing)
        except Exception:
            # A bug must not take the daemon down; the traceback names it.
            log.exception("store call failed")
            return default
        try:
            return call(self._store)
        except Exception:
            log.exception("store call failed in memory-only mode")
            return default

    def _submit(self, call: Callable[[Store], T], default: T) -> asyncio.Future[T]:
        """Queue ``call`` on the store's thread now; the future of its result."""
        loop = asyncio.get_running_loop()
        if self._closed:
            done: asyncio.Future[T] = loop.create_future()
            done.set_result(default)
            return done
        self._queued += 1
        job = loop.run_in_executor(self._executor, self._guarded, call, default)
        job.add_done_callback(self._job_done)
        return job

    async def _run(self, call: Callable[[Store], T], default: T) -> T:
        # Shielded: a caller cancelled by a stop must not cancel a write already queued (it would
        # be dropped before it ran). The caller still gets its cancellation at once, and close()
        # finishes the queued writes within its bound.
        return await asyncio.shield(self._submit(call, default))

    def _job_done(self, _: object) -> None:
        self._queued -= 1

    async def close(self, bound: float | None = None) -> int:
        """Finish the queued writes and close; the number of jobs left unfinished.

        With ``bound``, wait at most that many seconds (a stop must end even when the SD card
        does not answer). Jobs already on the worker thread still run there after that; the
        process's exit waits for them, unless the supervisor has to leave at once.
        """
        if self._closed:
            return 0
        self._closed = True  # later calls get their defaults: the daemon is stopping
        loop = asyncio.get_running_loop()
        self._queued += 1
        closing = loop.run_in_executor(self._executor, self._guarded, _close_store, None)
        closing.add_done_callback(self._job_done)
        done, _ = await asyncio.wait({closing}, timeout=bound)
        self._executor.shutdown(wait=False)
        if done:
            return 0
        log.error(
            "store_close_timed_out",
            bound_s=bound,
            unfinished_jobs=self._queued,
            hint="the disk did not answer in time; the writes still queued may be lost",
        )
        return self._queued

    # --- the Store interface, as coroutines ---

    async def load_plan(self, account: str, device_id: str) -> list[Dispatch] | None:
        return await self._run(lambda s: s.load_plan(account, device_id), None)

    async def save_plan(
        self, account: str, device_id: str, plan: Sequence[Dispatch], now: datetime
    ) -> None:
        plan = list(plan)
        await self._run(lambda s: s.save_plan(account, device_id, plan, now), None)

    async def add_completed(
        self, account: str, completed: Sequence[CompletedDispatch], now: datetime | None = None
    ) -> int:
        completed = list(completed)
        return await self._run(lambda s: s.add_completed(account, completed, now), 0)

    async def completed_between(
        self, account: str, start: datetime, end: datetime
    ) -> list[CompletedDispatch]:
        return await self._run(lambda s: s.completed_between(account, start, end), [])

    async def ran_between(self, account: str, start: datetime, end: datetime) -> list[SlotRecord]:
        return await self._run(lambda s: s.ran_between(account, start, end), [])

    async def withdrawn_between(
        self, account: str, start: datetime, end: datetime
    ) -> list[SlotRecord]:
        return await self._run(lambda s: s.withdrawn_between(account, start, end), [])

    async def log_event(self, account: str, event: dict[str, Any], at: datetime) -> None:
        event = dict(event)
        await self._run(lambda s: s.log_event(account, event, at), None)

    async def recent_events(self, account: str, limit: int) -> list[dict[str, Any]]:
        return await self._run(lambda s: s.recent_events(account, limit), [])

    async def save_retained(self, topic: str, payload: str, at: datetime) -> None:
        await self._run(lambda s: s.save_retained(topic, payload, at), None)

    def queue_retained(self, topic: str, payload: str, at: datetime) -> Awaitable[None]:
        """Queue the write now, before the caller publishes: a stop that cancels the caller
        between the publish and the write cannot lose the value (await the result)."""
        return asyncio.shield(self._submit(lambda s: s.save_retained(topic, payload, at), None))

    async def load_retained(self) -> dict[str, tuple[str, datetime]]:
        return await self._run(lambda s: s.load_retained(), {})

    async def delete_retained(self, topic: str) -> None:
        await self._run(lambda s: s.delete_retained(topic), None)

    async def set_meta(self, key: str, value: str) -> None:
        await self._run(lambda s: s.set_meta(key, value), None)

    async def get_meta(self, key: str) -> str | None:
        return await self._run(lambda s: s.get_meta(key), None)

    async def prune(self, now: datetime, keep_days: int) -> int:
        """Prune batch by batch, each its own job, so a poll's writes never wait for all of it."""
        deleted = 0
        while count := await self._run(lambda s: s.prune_batch(now, keep_days), 0):
            deleted += count
        return deleted


def _close_store(store: Store) -> None:
    store.close()
