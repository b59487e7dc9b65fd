"""The integration tests: the whole platform against the real broker, Redis and the sandboxes.

`ESIM_TEST_DATABASE` chooses where the services keep their data: `sqlite` (the default, one file
per service), `postgres` (one PostgreSQL database per service; see `tests.support.infra`), or
`sqlite,postgres`: every integration test once on each, on a platform of its own.

The `platform` fixture itself is in tests/conftest.py, shared with the browser tests
(tests/browser), which run on the same platform.

Under pytest-xdist (`--dist loadgroup`, see tests/conftest.py) each platform's tests are one
unit of work: one worker runs them in order on one platform while the others take the rest.
"""

import pytest

pytestmark = pytest.mark.integration
