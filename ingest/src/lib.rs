//! gridmon-ingest: everything on the bus into ClickHouse, durably and without duplicates.
//!
//! - [`schema`]: the versioned migrations and the retention policy;
//! - [`rows`]: bus messages to table rows, with bad values repaired and counted;
//! - [`store`]: ClickHouse (version check, migrations, inserts, look-ups);
//! - [`pipeline`]: the JetStream stream and consumer, batching, acknowledgement;
//! - [`backup`]: ClickHouse `BACKUP` on a schedule or on demand.

pub mod backup;
pub mod pipeline;
pub mod rows;
pub mod schema;
pub mod store;
