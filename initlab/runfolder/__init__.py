"""Run folders: their files, columns, locks and status (``storage``: one writer, one reader, one
schema), one run or one group end to end (``experiment``), and sweeps with their executors
(``sweeps``)."""
