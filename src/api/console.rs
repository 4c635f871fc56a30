//! The web console: static files built into the binary (`console/` in the repository),
//! served at `/` and `/console/…`. A page of plain HTML, CSS and JavaScript modules that
//! uses only the public API with the token the person signs in with (kept in the
//! browser's session storage, never in a URL). Every answer carries a strict
//! Content-Security-Policy: scripts, styles and requests of this origin only.

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{ApiError, ApiState, ErrorCode};

/// The policy of every console answer: nothing but this origin's scripts, styles and API.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The console's files: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", JS, include_str!("../../console/app.js")),
    ("api.js", JS, include_str!("../../console/api.js")),
    ("ui.js", JS, include_str!("../../console/ui.js")),
    ("tasks.js", JS, include_str!("../../console/tasks.js")),
    ("task.js", JS, include_str!("../../console/task.js")),
    ("queues.js", JS, include_str!("../../console/queues.js")),
    ("dead.js", JS, include_str!("../../console/dead.js")),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../console/style.css"),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";

const INDEX: &str = include_str!("../../console/index.html");

/// The console's routes.
pub fn routes() -> axum::Router<Arc<ApiState>> {
    axum::Router::new()
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", INDEX) }),
        )
        .route("/console/{file}", get(asset))
}

async fn asset(file: Result<Path<String>, axum::extract::rejection::PathRejection>) -> Response {
    let found = file
        .ok()
        .and_then(|Path(name)| ASSETS.iter().find(|(n, _, _)| *n == name));
    match found {
        Some((_, content_type, body)) => page(content_type, body),
        None => ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such file")
            .into_response(),
    }
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_loads_is_served() {
        // Each `import … from "./x.js"` and each file the page names is an asset.
        let mut named: Vec<String> = Vec::new();
        for (_, _, body) in ASSETS.iter().chain([("index.html", "", INDEX)].iter()) {
            for part in body.split(['"', '\'']) {
                let part = part
                    .trim_start_matches("./")
                    .trim_start_matches("/console/");
                if (part.ends_with(".js") || part.ends_with(".css"))
                    && !part.contains(' ')
                    && !part.contains('/')
                {
                    named.push(part.to_string());
                }
            }
        }
        assert!(named.iter().any(|n| n == "app.js"));
        for n in named {
            assert!(ASSETS.iter().any(|(a, _, _)| *a == n), "{n} is not served");
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_and_no_outside_address() {
        for (name, _, body) in ASSETS.iter().chain([("index.html", "", INDEX)].iter()) {
            // The SVG namespace is a name, not an address the page loads.
            let body = body.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "{name}"
            );
            assert!(!body.contains("style=\""), "{name}: inline style");
            assert!(!body.contains("innerHTML"), "{name}: no HTML from strings");
        }
        assert!(!INDEX.contains("<script>"), "inline script");
    }
}
