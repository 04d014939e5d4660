"""Renderers of a finished run's files for people: ``sims.reports.html`` writes ``report.html``."""
