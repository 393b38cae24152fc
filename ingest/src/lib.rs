//! ClickHouse ingest: durable, duplicate-free history of the bus (filled in by the ingest issue).
