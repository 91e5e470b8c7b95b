"""Running the paper's experiments: run configurations (:mod:`.config`), loading a subject (:mod:`.subject`),
one batch → one engine call → rows (:mod:`.batch`), the resumable runner (:mod:`.runner`), the study
definitions per profile (:mod:`.profiles`), row views (:mod:`.rows`), the inputs of chapters 01–03
(:mod:`.examples`, :mod:`.contrast_study`), the Parquet result store (:mod:`.store`), and the public facade
:mod:`.experiments` (``ck.experiments``).

Imports: :mod:`casekit.cam`, :mod:`casekit.evaluation`, :mod:`casekit.subjects`, :mod:`casekit._io` — never
the report room.
"""
