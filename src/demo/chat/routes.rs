//! The backend's HTTP side: which request goes where, the sign-in flow, the
//! pages, and handing WebSocket upgrades over to a [`client`](super::client) task.
//!
//! | request         | answer                                                      |
//! |-----------------|-------------------------------------------------------------|
//! | `GET /`         | the room page with a valid cookie, else `302 /signin`       |
//! | `GET /signin`   | the sign-in form                                            |
//! | `POST /signin`  | sets the `name` cookie, `302 /`                             |
//! | `GET /signout`  | clears the cookie, `302 /signin`                            |
//! | `GET /ws/chat`  | `101`, then the client joins the room (`400` if malformed)  |
//! | other methods   | `405` on the paths above                                    |
//! | anything else   | `404`                                                       |

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, SEC_WEBSOCKET_VERSION,
    SET_COOKIE, X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use tokio::time::timeout;
use tracing::{Instrument as _, debug, info};

use super::assets::{ROOM_PAGE, SIGNIN_PAGE};
use super::server::Backend;
use super::user::{User, clear_cookie_header};
use super::{client, form, handshake};

/// Every response body is a single buffer.
pub(crate) type Body = Full<Bytes>;

/// Largest sign-in form accepted.
const MAX_FORM_BYTES: usize = 4 * 1024;

/// How long a client may take to send the sign-in form.
const FORM_TIMEOUT: Duration = Duration::from_secs(10);

/// The pages load only their own scripts, styles and images, and talk only
/// to their own host (`ws:`/`wss:` spelled out for older browsers).
const PAGE_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; \
     img-src 'self'; style-src 'self'; script-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Where a request goes, decided from its method and path alone.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Room,
    SignInForm,
    SignIn,
    SignOut,
    WebSocket,
    /// A known path with a method it does not take; carries the `Allow` value.
    WrongMethod(&'static str),
    NotFound,
}

fn route(method: &Method, path: &str) -> Route {
    let read = *method == Method::GET || *method == Method::HEAD;
    match path {
        "/" if read => Route::Room,
        "/signin" if read => Route::SignInForm,
        "/signin" if *method == Method::POST => Route::SignIn,
        "/signout" if read => Route::SignOut,
        "/ws/chat" if *method == Method::GET => Route::WebSocket,
        "/" | "/signout" => Route::WrongMethod("GET, HEAD"),
        "/signin" => Route::WrongMethod("GET, HEAD, POST"),
        "/ws/chat" => Route::WrongMethod("GET"),
        _ => Route::NotFound,
    }
}

/// Answers one request; never fails (errors are HTTP answers).
pub(crate) async fn handle(
    backend: Arc<Backend>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let response = match route(request.method(), request.uri().path()) {
        Route::Room => room_page(request.headers()),
        Route::SignInForm => page(SIGNIN_PAGE),
        Route::SignIn => sign_in(&backend, request).await,
        Route::SignOut => sign_out(),
        Route::WebSocket => websocket(&backend, request),
        Route::WrongMethod(allow) => {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed\n");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
            response
        }
        Route::NotFound => text(StatusCode::NOT_FOUND, "Not found\n"),
    };
    Ok(response)
}

fn room_page(headers: &HeaderMap) -> Response<Body> {
    match User::from_headers(headers) {
        Some(_) => page(ROOM_PAGE),
        None => redirect("/signin"),
    }
}

async fn sign_in(backend: &Backend, request: Request<Incoming>) -> Response<Body> {
    if !is_form(request.headers()) {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Expected an application/x-www-form-urlencoded form\n",
        );
    }
    let reading = Limited::new(request.into_body(), MAX_FORM_BYTES).collect();
    let body = match timeout(FORM_TIMEOUT, reading).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) if err.is::<LengthLimitError>() => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "Form too large\n");
        }
        Ok(Err(err)) => {
            debug!(%err, "could not read the sign-in form");
            return text(StatusCode::BAD_REQUEST, "Could not read the form\n");
        }
        Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "Form took too long\n"),
    };
    let name = match form::field(&body, "name") {
        Ok(name) => name.unwrap_or_default(),
        Err(err) => return text(StatusCode::BAD_REQUEST, format!("{err}\n")),
    };
    let id = backend.last_user_id.fetch_add(1, Ordering::Relaxed) + 1;
    let user = User::sign_in(id, &name);
    info!(user.id, user.name = %user.name, "user signed in");
    with_cookie(redirect("/"), user.set_cookie_header())
}

fn sign_out() -> Response<Body> {
    with_cookie(redirect("/signin"), clear_cookie_header())
}

fn websocket(backend: &Arc<Backend>, mut request: Request<Incoming>) -> Response<Body> {
    let accept = match handshake::accept_key(&request) {
        Ok(accept) => accept,
        Err(err) => {
            debug!(%err, "refused a WebSocket handshake");
            let mut response = text(StatusCode::BAD_REQUEST, format!("{err}\n"));
            response
                .headers_mut()
                .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            return response;
        }
    };
    let user = User::from_headers(request.headers());
    let on_upgrade = hyper::upgrade::on(&mut request);
    // hyper stops tracking the connection once it is upgraded: the client
    // task is tracked by the backend instead, so shutdown waits for it.
    backend
        .tasks
        .spawn(client::run(Arc::clone(backend), on_upgrade, user).in_current_span());
    handshake::switching_protocols(&accept)
}

/// Whether the request says its body is an URL-encoded form.
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

fn page(html: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(html.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    no_store(headers);
    response
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    no_store(headers);
    response
}

fn redirect(location: &'static str) -> Response<Body> {
    let mut response = text(StatusCode::FOUND, format!("Found: {location}\n"));
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static(location));
    response
}

fn with_cookie(mut response: Response<Body>, cookie: String) -> Response<Body> {
    match HeaderValue::try_from(cookie) {
        Ok(value) => {
            response.headers_mut().insert(SET_COOKIE, value);
            response
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Could not build the cookie\n",
        ),
    }
}

fn no_store(headers: &mut HeaderMap) {
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_table() {
        let cases = [
            (Method::GET, "/", Route::Room),
            (Method::HEAD, "/", Route::Room),
            (Method::GET, "/signin", Route::SignInForm),
            (Method::POST, "/signin", Route::SignIn),
            (Method::GET, "/signout", Route::SignOut),
            (Method::GET, "/ws/chat", Route::WebSocket),
            (Method::POST, "/", Route::WrongMethod("GET, HEAD")),
            (
                Method::DELETE,
                "/signin",
                Route::WrongMethod("GET, HEAD, POST"),
            ),
            (Method::POST, "/ws/chat", Route::WrongMethod("GET")),
            (Method::GET, "/ws/chat/", Route::NotFound),
            (Method::GET, "/static/chat.js", Route::NotFound),
            (Method::GET, "/favicon.ico", Route::NotFound),
        ];
        for (method, path, expected) in cases {
            assert_eq!(route(&method, path), expected, "{method} {path}");
        }
    }

    #[test]
    fn form_content_type_detection() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
            headers
        };
        assert!(is_form(&with("application/x-www-form-urlencoded")));
        assert!(is_form(&with(
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8"
        )));
        assert!(!is_form(&with("application/json")));
        assert!(!is_form(&with("multipart/form-data; boundary=x")));
        assert!(!is_form(&HeaderMap::new()));
    }

    #[test]
    fn redirects_carry_location_and_no_store() {
        let response = redirect("/signin");
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(response.headers()[LOCATION], "/signin");
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    }
}
