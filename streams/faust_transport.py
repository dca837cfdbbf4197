"""faust's aiokafka transport with a short consumer fetch wait.

faust creates its worker consumer with `fetch_max_wait_ms=1500` and no setting to change it.
Kafka answers a waiting fetch as soon as data arrives, so that is harmless there; Tansu holds the
fetch for the whole wait, which was most of a re-sent catalog's end-to-end time (the produce-to-
consume latencies per wait are in docs/ingestion.md). An idle worker then sends ~10 empty fetches
a second, which costs nothing measurable.
"""

from __future__ import annotations

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

FETCH_MAX_WAIT_MS = 100


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by aiokafka's Fetcher at start()
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self):
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class App(faust.App):
    """faust.App whose consumer transport is aiokafka with a FETCH_MAX_WAIT_MS fetch wait."""

    def _new_transport(self):
        return _Transport(self.conf.broker_consumer, self)
