"""Suite-wide settings."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# The suite shares two cores with a broker and its workers: example generation and each
# example may be slow, which is not what the property tests are about.
settings.register_profile("streamfold", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("streamfold")
