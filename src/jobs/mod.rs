//! Background jobs that outlive the request that started them.

pub mod generation;
pub mod orphans;
