"""Retention for the durable embedded broker: delete the batches every consumer group has committed past.

Tansu 0.6's S3 engine stores each produced batch as one object,
`clusters/CLUSTER/topics/TOPIC/partitions/PPPPPPPPPP/records/OFFSET.batch` (offsets zero-padded to 20
digits, so names sort by offset), lists every object of a partition on each fetch, and deletes nothing
(its DeleteRecords is unimplemented). A partition therefore slows its readers down with every batch,
until fetches come back empty (docs/reliability.md). This job bounds it from outside: it deletes the
objects of a partition whose records all lie below the lowest offset that every consumer group of the
topic has committed there, once they are older than a minimum age.

What Tansu reads stays consistent after that (tests/streams/test_retention.py): a fetch lists what is
left and returns the batches at or above its offset, a fetch below the first one left starts there (a
gap, as after compaction), the earliest offset is that of the oldest object left, and offsets come from
the partition's `watermark.json`, which is never touched. The newest object of a partition is never
deleted (ListOffsets answers 0 for a partition with none). A partition on which some group of its
topic has not committed, and a topic no group has committed on (the dead letters, read from the start
by `vitrine status`), keep everything.

The objects are listed and deleted through SeaweedFS's filer (the same entries the S3 gateway
serves, under /buckets/BUCKET/): its HTTP API needs no request signing, and it listens on 127.0.0.1 only.

A pass is background work on the machine that serves: it rests after each filer request for as long as
the request took times (1 - duty) / duty, so it and the filer's share of the cores stay near `duty` (the
re-embed's and the IVF tuning's rule). Unpaced, a pass of up to ~1,000 DELETEs from 4 threads took up to
~0.65 s of CPU in its process and ~0.44 s in the S3 server within one second, once a minute, and the
requests served in that second were among the slowest of a benchmark level (docs/serving.md).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
from kafka.admin import KafkaAdminClient

from core.pace import check_duty, rest_after
from streams.child import stop_child

log = logging.getLogger(__name__)

LIST_PAGE = 1000  # entries per filer listing request
RETENTION_DUTY = 0.2  # the share of a pass's wall time it works (filer requests); it rests the rest
RETENTION_NICE = 10  # the child process's niceness: serving gets the cores first
_DIRECTORY = 1 << 31  # Go's os.ModeDir, as the filer reports an entry's Mode


@dataclass(frozen=True)
class BatchObject:
    """One stored batch: its object path, the offset of its first record, when it was written."""

    path: str
    base_offset: int
    modified: datetime


def deletable(batches: Sequence[BatchObject], floor: int, written_before: datetime) -> list[BatchObject]:
    """The batches (sorted by offset) whose records all lie below `floor` and that were written before the cutoff.

    A batch's records end where the next batch begins, so a batch goes only when the next one starts
    at or below `floor`; the newest batch has no next one and always stays.
    """
    return [
        batch
        for batch, after in zip(batches, batches[1:], strict=False)
        if after.base_offset <= floor and batch.modified <= written_before
    ]


def partition_floor(committed: dict[str, dict[int, int]], partition: int) -> tuple[int, str] | None:
    """(lowest committed offset, group holding it) over every group of the topic; None if one has not committed here."""
    floor: tuple[int, str] | None = None
    for group, offsets in sorted(committed.items()):
        offset = offsets.get(partition, -1)
        if offset < 0:
            return None
        if floor is None or offset < floor[0]:
            floor = (offset, group)
    return floor


def committed_offsets(bootstrap: str, timeout_s: float = 10.0) -> dict[str, dict[str, dict[int, int]]]:
    """topic -> group -> partition -> committed offset, for every consumer group the broker knows; raises if any fails.

    A view with a group missing could put the floor above that group's position, so there is no
    partial answer.
    """
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="vitrine-broker-retention", request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        out: dict[str, dict[str, dict[int, int]]] = {}
        for listed in admin.list_groups():
            group = listed["group_id"]
            # kafka-python 3.0 answers {group: {TopicPartition: OffsetAndMetadata}}.
            for tp, om in admin.list_group_offsets(group).get(group, {}).items():
                out.setdefault(tp.topic, {}).setdefault(group, {})[tp.partition] = om.offset
        return out
    finally:
        admin.close()


class TansuBucket:
    """Tansu's objects in one bucket of the embedded SeaweedFS, through its filer's HTTP API."""

    def __init__(self, filer_url: str, bucket: str, cluster: str, *, timeout_s: float = 10.0):
        self.where = (filer_url, bucket, cluster)  # for a process of its own to open the same (RetentionProcess)
        self.root = f"/buckets/{bucket}/clusters/{quote(cluster)}/topics"
        self.client = httpx.Client(base_url=filer_url, headers={"Accept": "application/json"}, timeout=timeout_s)
        self.pace: Callable[[float], None] | None = None  # called with each request's seconds (BrokerRetention)

    def _request(self, method: str, url: str, **kwargs) -> httpx.Response:
        started = time.perf_counter()
        r = self.client.request(method, url, **kwargs)
        if self.pace is not None:
            self.pace(time.perf_counter() - started)
        return r

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()

    def _entries(self, directory: str) -> Iterator[dict]:
        """The entries of `directory` in name order, a page at a time; none if it does not exist."""
        last = ""
        while True:
            r = self._request("GET", f"{directory}/", params={"limit": LIST_PAGE, "lastFileName": last})
            if r.status_code == 404:
                return
            r.raise_for_status()
            page = r.json()
            yield from page.get("Entries") or ()
            if not page.get("ShouldDisplayLoadMore"):
                return
            last = page["LastFileName"]

    def topics(self) -> list[str]:
        """Every topic with stored partitions."""
        return [e["FullPath"].rsplit("/", 1)[1] for e in self._entries(self.root) if e["Mode"] & _DIRECTORY]

    def partitions(self, topic: str) -> list[int]:
        """The partitions of `topic` that have a directory in the bucket."""
        entries = self._entries(f"{self.root}/{quote(topic)}/partitions")
        return [int(e["FullPath"].rsplit("/", 1)[1]) for e in entries if e["Mode"] & _DIRECTORY]

    def batches(self, topic: str, partition: int) -> Iterator[BatchObject]:
        """The partition's batch objects in offset order (lazily: a caller that stops early lists no further pages)."""
        for e in self._entries(f"{self.root}/{quote(topic)}/partitions/{partition:010d}/records"):
            name = e["FullPath"].rsplit("/", 1)[1]
            if not name.endswith(".batch") or e["Mode"] & _DIRECTORY:
                continue
            # Seconds are enough for an age measured in minutes (and the filer's fraction has 9 digits).
            modified = datetime.strptime(e["Mtime"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
            yield BatchObject(e["FullPath"], int(name[:20]), modified)

    def delete(self, path: str) -> None:
        """Delete one object (gone already is fine)."""
        r = self._request("DELETE", path)
        if r.status_code != 404:
            r.raise_for_status()


@dataclass
class RetentionReport:
    """What one pass did."""

    deleted: int = 0
    trimmed: int = 0  # partitions with a committed floor (whether or not anything was old enough to go)
    kept_whole: int = 0  # partitions some group of their topic has not committed on, or that no group reads
    seconds: float = 0.0
    rested_s: float = 0.0  # of `seconds`, the rests after filer requests (RETENTION_DUTY)
    floors: dict[str, tuple[int, str]] = field(default_factory=dict)  # "topic/partition" -> (floor, group)


class BrokerRetention:
    """Every `interval_s`, delete the batches all consumer groups are past (`run_once`), in a thread of its own."""

    def __init__(
        self, bucket: TansuBucket, bootstrap: str, *, interval_s: float, min_age_s: float, duty: float = RETENTION_DUTY
    ):
        """`duty`: the share of a pass's time it works, in (0, 1]; 1 = no rests."""
        self.bootstrap, self.interval_s, self.min_age_s = bootstrap, interval_s, min_age_s
        self.duty = check_duty(duty)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.bucket = bucket
        self._rested = 0.0  # the current pass's rests

    def _rest(self, busy_s: float) -> None:
        """After a filer request that took `busy_s`: rest so that work is `duty` of the time (none once stopping)."""
        if self.duty < 1 and not self._stop.is_set():
            rest = rest_after(busy_s, self.duty)
            self._rested += rest
            self._stop.wait(rest)

    def run_once(self, now: datetime | None = None) -> RetentionReport:
        """One pass over every stored partition; raises if the committed offsets cannot be read (nothing deleted)."""
        started = time.perf_counter()
        cutoff = (now or datetime.now(UTC)) - timedelta(seconds=self.min_age_s)
        committed = committed_offsets(self.bootstrap)
        report = RetentionReport()
        self.bucket.pace, self._rested = self._rest, 0.0
        try:
            for topic in self.bucket.topics():
                for partition in self.bucket.partitions(topic):
                    floor = partition_floor(committed.get(topic, {}), partition)
                    if floor is None:
                        report.kept_whole += 1
                        continue
                    report.trimmed += 1
                    report.floors[f"{topic}/{partition}"] = floor
                    report.deleted += self._trim(topic, partition, floor[0], cutoff)
        finally:
            self.bucket.pace = None  # the bucket's other callers (a test, a status listing) do not rest
        report.seconds, report.rested_s = time.perf_counter() - started, self._rested
        return report

    def _trim(self, topic: str, partition: int, floor: int, cutoff: datetime) -> int:
        batches: list[BatchObject] = []
        for batch in self.bucket.batches(topic, partition):
            batches.append(batch)
            # The first batch at or past the floor, or written after the cutoff, ends the candidates: a partition's
            # batches are written in offset order, so every later one is younger still. A pass lists what it may
            # delete and one batch more, not the partition's last minutes.
            if batch.base_offset >= floor or batch.modified > cutoff:
                break
        doomed = deletable(batches, floor, cutoff)
        for b in doomed:  # one at a time, each followed by its rest
            self.bucket.delete(b.path)
        return len(doomed)

    def _loop(self) -> None:
        while True:
            try:
                report = self.run_once()
            except Exception as exc:  # noqa: BLE001  the broker or S3 away for a moment: try again next interval
                log.warning("broker retention pass failed, nothing deleted this time: %s: %s", type(exc).__name__, exc)
            else:
                # Which groups hold the floors: a group stopped for good holds its partitions until it is deleted.
                holders = sorted({group for _, group in report.floors.values()})
                log.log(
                    logging.INFO if report.deleted else logging.DEBUG,
                    "broker retention: deleted %d batches in %.1f s, %.1f s of it resting (%d partitions with a "
                    "committed floor, held by %s; %d kept whole: some group has not committed there, or none "
                    "reads them)",
                    report.deleted,
                    report.seconds,
                    report.rested_s,
                    report.trimmed,
                    ", ".join(holders) or "no group",
                    report.kept_whole,
                )
            if self._stop.wait(self.interval_s):
                return

    def start(self) -> BrokerRetention:
        """Run a first pass now and one every `interval_s` after it, in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="broker-retention", daemon=True)
        self._thread.start()
        log.info(
            "broker retention every %.0f s: batches older than %.0f s below every group's committed offset",
            self.interval_s,
            self.min_age_s,
        )
        return self

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the thread (a pass in progress finishes first) and close the filer connections."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self.bucket.close()


def _run_retention(where: list[str], bootstrap: str, interval_s: float, min_age_s: float, level: int) -> None:
    """The child process of `RetentionProcess`: the retention's thread until SIGTERM, or until its parent is gone."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is the parent's: it stops us in order
    os.nice(RETENTION_NICE)
    parent = os.getppid()
    retention = BrokerRetention(TansuBucket(*where), bootstrap, interval_s=interval_s, min_age_s=min_age_s).start()
    while not stop.wait(1.0) and os.getppid() == parent:  # a parent killed outright leaves us to the init process
        pass
    retention.stop()


class RetentionProcess:
    """`BrokerRetention` in a process of its own (`python -m streams.retention`), as the embedded stack runs it.

    A pass is Python work (filer listings, up to a few thousand DELETEs, a Kafka admin client). In a
    thread it took the GIL, in bursts of ~0.5 s of CPU a pass, from whatever else the process ran: `vitrine up`
    runs nothing else, but a benchmark or the demo embeds the same stack beside its load generator, whose
    requests in flight then all looked slow (docs/serving.md, "The codes' tail at 1M, and the broker retention in a
    process of its own"). A plain child interpreter, not multiprocessing's spawn: that re-imports the parent's main
    module, which in a test run may be a Streamlit page a test left as `__main__`. The child runs at niceness
    RETENTION_NICE and paces its passes (RETENTION_DUTY).
    """

    def __init__(self, bucket: TansuBucket, bootstrap: str, *, interval_s: float, min_age_s: float):
        where = list(bucket.where)
        self.args = {"where": where, "bootstrap": bootstrap, "interval_s": interval_s, "min_age_s": min_age_s}
        bucket.close()  # the child opens its own
        self._proc: subprocess.Popen | None = None

    def start(self) -> RetentionProcess:
        """Start the child; its log lines go where this process's stderr goes."""
        args = json.dumps(self.args | {"level": log.getEffectiveLevel()})
        self._proc = subprocess.Popen([sys.executable, "-m", "streams.retention", args], stdin=subprocess.DEVNULL)
        log.info("broker retention in process %d", self._proc.pid)
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the child is alive."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (a pass in progress finishes first), wait, kill it if it hangs."""
        stop_child(self._proc, "broker retention", timeout_s)
        self._proc = None


if __name__ == "__main__":
    _run_retention(**json.loads(sys.argv[1]))
