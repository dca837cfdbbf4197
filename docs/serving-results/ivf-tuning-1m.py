"""Tune the bit kinds' IVFFlat indexes of the 1M serve-benchmark catalog and print every setting measured.

Run against the bench's Postgres (started on its data dir, e.g. `EmbeddedPostgres(Path("/tmp/vib-1m/postgres"))`):
    .venv/bin/python docs/serving-results/ivf-tuning-1m.py binary,codes
Records the tuning on each index, as the workers' index check does (db/ivf_tuning.py).
"""

import logging
import os
import sys
import time

from db.ivf_tuning import tune_ivf_index
from db.session import create_db_engine, session_factory

logging.basicConfig(level=logging.INFO)
URL = os.environ.get("PROBE_URL", "postgresql+psycopg://postgres:@/vitrine?host=/tmp/vib-1m/postgres")
MODEL = os.environ.get("PROBE_MODEL", "bench-triplet@ae09e595e3e1")
sessions = session_factory(create_db_engine(URL))
for kind in sys.argv[1].split(","):
    started = time.perf_counter()
    out = tune_ivf_index(sessions, MODEL, kind, sample=int(os.environ.get("SAMPLE", 200)))
    print(kind, round(time.perf_counter() - started, 1), "s", flush=True)
    if out:
        tuning, trials = out
        print(tuning)
        for trial in trials:
            if trial.recall is not None:
                print("  ", trial)
