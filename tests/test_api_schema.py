"""Property-based checks of the service against its own OpenAPI schema (schemathesis).

Bounded examples per operation; every answer must be non-5xx and match the
documented status codes, content types, headers and schemas.
"""
from __future__ import annotations

import schemathesis
from schemathesis.checks import positive_data_acceptance
from hypothesis import HealthCheck, given, settings

from api.app import create_app
from api.settings import Settings
from test_api_fakes import footprint_runner

EXAMPLES_PER_OPERATION = 12
# A schema cannot say "these bytes must be a georeferenced GeoTIFF": schema-valid uploads
# are rightly refused (4xx with a detail), so that one check does not apply to uploads.
KEY = "schemathesis-key"
UPLOADS = {("POST", "/v1/jobs"), ("POST", "/v1/segment")}


def test_every_operation_conforms_to_the_schema(tmp_path):
    config = Settings(data_dir=tmp_path / "svc", max_upload_bytes=1024**2, api_key=KEY, standby=False)
    app = create_app(config, runner=footprint_runner)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # it runs the app's lifespan
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7

    for operation in operations:
        excluded = [positive_data_acceptance] if (operation.method.upper(), operation.path) in UPLOADS else []

        @given(case=operation.as_strategy())
        # derandomize: the same examples on every run. Random ones hung 1 run in 40 (--hypothesis-seed=37:
        # hypothesis spent minutes drawing a string for the upload form's regex-constrained fields), and a
        # suite that fails by chance on CI tells nothing
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def conforms(case):
            case.call_and_validate(headers={"X-API-Key": KEY}, excluded_checks=excluded)

        conforms()
