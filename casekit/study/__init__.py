"""Running the paper's experiments: run configurations, loading a subject, the batch runner that turns one engine
call per batch into result rows, the study definitions per profile (:mod:`.experiments`) and the resumable
Parquet result store (:mod:`.store`).

Imports: :mod:`casekit.cam`, :mod:`casekit.evaluation`, :mod:`casekit.subjects`, :mod:`casekit._io` — never the
report room.
"""
