//! The pages as HTML: templates from `web/` with their `{{slots}}` filled, every value escaped.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::Value;

use super::assets::{self, Asset};

/// Escapes text for an HTML text node or a quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON to sit inside `<script type="application/json">`: no `<` may end the element early.
pub fn script_json(value: &Value) -> String {
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// Fills `{{name}}` slots with values that are already escaped for where they go.
fn fill(template: &str, slots: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (name, value) in slots {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    out
}

fn asset_url(asset: &Asset) -> String {
    format!("/static/{}?v={}", asset.name, asset.version())
}

fn common_slots() -> Vec<(&'static str, String)> {
    vec![
        ("style", escape(&asset_url(&assets::STYLE))),
        ("room_js", escape(&asset_url(&assets::ROOM_JS))),
        ("console_js", escape(&asset_url(&assets::CONSOLE_JS))),
        ("docs_js", escape(&asset_url(&assets::DOCS_JS))),
    ]
}

/// What the room page knows before the visitor presses Start.
pub struct RoomView<'a> {
    pub link_id: &'a str,
    pub agent_name: &'a str,
    /// One of AgentHuman's 4:3, 3:4, 1:1.
    pub aspect_ratio: &'a str,
    /// Data the script reads (`room.js`).
    pub data: Value,
}

pub fn room(view: &RoomView) -> String {
    let ratio_class = match view.aspect_ratio {
        "3:4" => "ratio-3-4",
        "1:1" => "ratio-1-1",
        _ => "ratio-4-3",
    };
    let mut slots = common_slots();
    slots.extend([
        ("agent_name", escape(view.agent_name)),
        ("link_id", escape(view.link_id)),
        ("ratio_class", ratio_class.to_string()),
        ("data", script_json(&view.data)),
    ]);
    fill(assets::ROOM_HTML, &slots)
}

/// A page that says, in one heading and one sentence, why there is nothing to start here.
pub fn notice(heading: &str, sentence: &str) -> String {
    let mut slots = common_slots();
    slots.extend([("heading", escape(heading)), ("sentence", escape(sentence))]);
    fill(assets::NOTICE_HTML, &slots)
}

pub fn console() -> String {
    fill(assets::CONSOLE_HTML, &common_slots())
}

/// The API reference: `docs.js` renders `/openapi.json` into it.
pub fn docs() -> String {
    fill(assets::DOCS_HTML, &common_slots())
}

/// What every page answers with: no caching (a link's state changes), no referrer (the link id in
/// the URL is a credential), and scripts only from this server.
pub fn html(status: StatusCode, body: String, microphone: bool) -> HttpResponse {
    let permissions = if microphone {
        "microphone=(self), camera=(), geolocation=()"
    } else {
        "microphone=(), camera=(), geolocation=()"
    };
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("X-Robots-Tag", "noindex, nofollow"))
        .insert_header(("Permissions-Policy", permissions))
        .insert_header((
            "Content-Security-Policy",
            // connect-src stays open to any ws(s)/http(s) origin: a LiveKit server lives elsewhere.
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
             media-src 'self' blob:; connect-src 'self' ws: wss: http: https:; base-uri 'none'; \
             form-action 'self'",
        ))
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_slot_is_filled_and_values_are_escaped() {
        let page = room(&RoomView {
            link_id: "lnk_x",
            agent_name: "<Ada & \"Bob\">",
            aspect_ratio: "3:4",
            data: json!({"name": "</script><script>alert(1)</script>"}),
        });
        assert!(!page.contains("{{"), "unfilled slot");
        assert!(page.contains("&lt;Ada &amp; &quot;Bob&quot;&gt;"));
        assert!(!page.contains("</script><script>alert"));
        assert!(page.contains("ratio-3-4"));
        for page in [notice("Gone", "It is <gone>."), console()] {
            assert!(!page.contains("{{"), "unfilled slot");
        }
        assert!(notice("Gone", "It is <gone>.").contains("It is &lt;gone&gt;."));
    }
}
