//! `route_table!`, which declares a module's routes once, and the HTTP methods it names: a leaf
//! the API's own table and the browser pages (`web`) both use.

/// Declares a module's routes once: `routes(cfg)` registers them with actix, and `ROUTES` lists
/// them as (method, path pattern) for the OpenAPI document's test, so neither can drift.
macro_rules! route_table {
    ($($method:ident $path:literal => $handler:path),* $(,)?) => {
        /// Every route of this module, as (method, path pattern).
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        pub fn routes(cfg: &mut actix_web::web::ServiceConfig) {
            $(cfg.route($path, $crate::api::routes::verb::$method().to($handler));)*
        }
    };
}
pub(crate) use route_table;

/// The HTTP methods `route_table!` names, as actix route builders.
pub mod verb {
    use actix_web::http::Method;
    use actix_web::{web, Route};

    pub fn get() -> Route {
        web::get()
    }
    pub fn post() -> Route {
        web::post()
    }
    pub fn patch() -> Route {
        web::patch()
    }
    pub fn delete() -> Route {
        web::delete()
    }
    pub fn options() -> Route {
        web::method(Method::OPTIONS)
    }
}
