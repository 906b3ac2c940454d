"""Reports: run folders read back (``results``), the report table and its text formats (``tables``),
width sweeps (``width``), console views (``display``), figures (``plot``), the HTML report
(``html_report``) and other tools' formats (``export``). Reads results; never imports training."""
