//! A session link's status.

named_states! {
    /// Stored `active` or `revoked`; an `active` link reads `expired` or `exhausted` once it is
    /// (`store::links::effective_status`).
    pub enum LinkStatus {
        Active = "active",
        Revoked = "revoked",
        Expired = "expired",
        Exhausted = "exhausted",
    }
}
