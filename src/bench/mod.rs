//! `walrus bench`: load generators, the original design as a baseline, and the
//! table / JSON / SVG reports.

pub mod baseline;
pub mod http;
pub mod original_server;
pub mod plot;
pub mod progress;
pub mod report;
pub mod resp;
pub mod store;
pub mod timeline;
