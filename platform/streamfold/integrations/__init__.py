"""Bridges from other stream processors to streamfold's topics.

- :mod:`~streamfold.integrations.faust`: a Faust codec and topics for a bounded context
  (the ``faust`` extra).
"""
