//! `walrus bench`: load generators, the original design as a baseline, and the
//! table / JSON reports.

pub mod baseline;
pub mod report;
pub mod store;
