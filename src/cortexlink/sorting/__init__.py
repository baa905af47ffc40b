"""Spike sorting: one recording → units with quality metrics and curation labels (issue 15).

Modules (each imports spikeinterface itself, so ``import cortexlink.sorting`` stays light):

* :mod:`~cortexlink.sorting.recording` — any recording cortexlink reads as a lazy
  SpikeInterface recording in µV with its probe (:func:`to_si_recording`);
* :mod:`~cortexlink.sorting.sorters` — :func:`available_sorters`, :func:`run_sorter`;
* :mod:`~cortexlink.sorting.metrics` — the SortingAnalyzer and quality metrics;
* :mod:`~cortexlink.sorting.merging` — the automatic merge of units a sorter split;
* :mod:`~cortexlink.sorting.curation` — :class:`CurationRules` and a label per unit;
* :mod:`~cortexlink.sorting.nwb` — the Units table in ``units.nwb``;
* :mod:`~cortexlink.sorting.report` — ``report.html``;
* :mod:`~cortexlink.sorting.pipeline` — :func:`sort_recording`, what ``cortexlink sort`` runs.
"""
