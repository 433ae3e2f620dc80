"""The logic behind `shop events`: reading, carrying, tracing, auditing and replaying the log.

Pure where it can be (records, file format, trace order, audit invariants, offset plans); the
modules that talk to Kafka (`reader`, `groups`, `redrive`, `importer`) stay thin around them.
"""
