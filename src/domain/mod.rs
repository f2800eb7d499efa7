//! Plain value types every layer shares, importing nothing of the crate: identifiers (generated and
//! parsed), session states and end reasons, the events a session emits, the voice-agent config, the
//! model asset, and the views clients and webhooks see. No I/O, no actors, no wire format choices
//! beyond serde shapes that are the stored or public form of a value.

/// A state with a fixed name: how it is stored (as today's strings), shown and parsed.
macro_rules! named_states {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            pub fn parse(raw: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|s| s.as_str() == raw)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    };
}

pub mod agent;
pub mod backoff;
pub mod events;
pub mod ids;
pub mod link;
pub mod session;
pub mod time;
pub mod views;
