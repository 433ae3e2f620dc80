"""Topic creation lives in the kit (events.kit.admin); the CLI and tests use it from here too."""

from events.kit.admin import TopicError, TopicInfo, TopicsReport, ensure_topics, list_topics

__all__ = ["TopicError", "TopicInfo", "TopicsReport", "ensure_topics", "list_topics"]
