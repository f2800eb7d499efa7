//! The domain's states in their columns, stored as the strings they always were (no migration):
//! written by `as_str`, read by `parse`, and a stored string no state has is a read error.

use crate::domain::agent::AgentStatus;
use crate::domain::events::WebhookStatus;
use crate::domain::link::LinkStatus;
use crate::domain::session::SessionState;

macro_rules! stored_as_string {
    ($($ty:ident),+) => {$(
        impl From<$ty> for sea_orm::Value {
            fn from(state: $ty) -> Self {
                state.as_str().into()
            }
        }

        impl sea_orm::TryGetable for $ty {
            fn try_get_by<I: sea_orm::ColIdx>(
                res: &sea_orm::QueryResult,
                idx: I,
            ) -> Result<Self, sea_orm::TryGetError> {
                let raw = String::try_get_by(res, idx)?;
                $ty::parse(&raw).ok_or_else(|| {
                    sea_orm::TryGetError::DbErr(sea_orm::DbErr::Type(format!(
                        "{raw:?} is not a {}",
                        stringify!($ty)
                    )))
                })
            }
        }

        impl sea_orm::sea_query::ValueType for $ty {
            fn try_from(v: sea_orm::Value) -> Result<Self, sea_orm::sea_query::ValueTypeErr> {
                let raw = <String as sea_orm::sea_query::ValueType>::try_from(v)?;
                $ty::parse(&raw).ok_or(sea_orm::sea_query::ValueTypeErr)
            }

            fn type_name() -> String {
                stringify!($ty).to_owned()
            }

            fn array_type() -> sea_orm::sea_query::ArrayType {
                sea_orm::sea_query::ArrayType::String
            }

            fn column_type() -> sea_orm::sea_query::ColumnType {
                sea_orm::sea_query::ColumnType::String(sea_orm::sea_query::StringLen::None)
            }
        }

        impl sea_orm::sea_query::Nullable for $ty {
            fn null() -> sea_orm::Value {
                sea_orm::Value::String(None)
            }
        }

        impl sea_orm::IntoActiveValue<$ty> for $ty {
            fn into_active_value(self) -> sea_orm::ActiveValue<$ty> {
                sea_orm::ActiveValue::Set(self)
            }
        }
    )+};
}

stored_as_string!(SessionState, AgentStatus, LinkStatus, WebhookStatus);
