"""Medical-device evidence generated from the code and its tests (``cortexlink evidence``).

- :mod:`~cortexlink.evidence.riskfile`: the risk management file (hazards in ISO 14971's form, the
  software requirements that control them, the safety-critical files);
- :mod:`~cortexlink.evidence.trace`: requirements traced to the tests that carry their ids;
- :mod:`~cortexlink.evidence.coverage`, :mod:`~cortexlink.evidence.mutation`: how strong those
  tests are on the safety-critical code;
- :mod:`~cortexlink.evidence.soup`: SOUP with known vulnerabilities, and the CycloneDX SBOM;
- :mod:`~cortexlink.evidence.run`, :mod:`~cortexlink.evidence.report`: the whole run, and
  ``evidence/evidence.json`` and ``evidence/report.html``.
"""
