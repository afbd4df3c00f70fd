"""Online snapshot creation end to end, on the real stack.

Over the real RabbitMQ with conductor and agent as separate processes and
PostgreSQL as the database, and in one process over kombu+memory.
"""

import pytest

from livesnap_tools import fixtures
from tests.functional import scenarios

pytestmark = pytest.mark.functional


def test_online_create_in_process(inprocess, tmp_path):
    scenarios.online_create(inprocess, tmp_path)


def test_online_create_over_rabbitmq(tmp_path, rabbit_url, postgres_url):
    fixtures.pg_reset_schema(postgres_url)
    with fixtures.running(fixtures.ProcessDeployment(
            tmp_path, rabbit_url, postgres_url)) as dep:
        scenarios.online_create(dep, tmp_path)
